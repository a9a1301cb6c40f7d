"""The policy file: pydantic models, YAML loading and line-numbered validation errors.

Every string that ends up in ``haproxy.cfg`` is checked here against a strict allow-list
(no quotes, backslashes, ``$``, ``#``, spaces or control characters unless the place it
lands in is known to be safe), so that nothing in a policy can inject configuration.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from scimgate.policy.agents_model import AgentIdentity, AllowAgents, RateLimit

# ---------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in a policy file, located as precisely as the YAML node marks allow."""

    source: str
    line: int  # 1-based; 0 when unknown
    column: int  # 1-based; 0 when unknown
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.source}:{self.line}:{self.column}: {self.message}"
        return f"{self.source}: {self.message}"


class PolicyError(ValueError):
    """The policy file is invalid; ``problems`` lists every problem found."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"invalid policy ({len(problems)} problem(s)):\n{lines}")


# ---------------------------------------------------------------------------------------------
# Allow-lists (everything rendered into haproxy.cfg goes through one of these)

SLUG_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
ROUTE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}$")
PATH_PREFIX_RE = re.compile(r"^/[A-Za-z0-9._~/-]{0,255}$")
SCOPE_RE = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")
CLAIM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
URLISH_RE = re.compile(r"^[A-Za-z0-9._~:/?&=+@%-]{1,512}$")
FILE_PATH_RE = re.compile(r"^[A-Za-z0-9._/+-]{1,1024}$")
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# headers scimgate sets for a backend: an X- name (never a standard header such as Host)
UPSTREAM_HEADER_RE = re.compile(r"^X-[A-Za-z0-9]+(?:-[A-Za-z0-9]+){0,7}$")
RETURN_TEXT_RE = re.compile(r"^[A-Za-z0-9 .,:;!?()_/+=@-]{0,256}$")
BACKEND_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
SERVER_RE = re.compile(rf"^(?:{_LABEL}\.)*{_LABEL}:[0-9]{{1,5}}$")
HMAC_SECRET_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{32,512}$")
ENTERPRISE_ATTR_RE = re.compile(r"^urn:[A-Za-z0-9.:_-]+:[A-Za-z][A-Za-z0-9_]{0,63}$")

PLAIN_KEY_ATTRIBUTES = ("userName", "emails", "emails.primary", "externalId")
ANY_GROUP = "any"  # reserved: any active user
RESERVED_BACKEND_PREFIX = "scimgate"


def _matching(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {what} {value!r}: must match {pattern.pattern}")
        return value

    return AfterValidator(check)


def _check_host(value: str) -> str:
    if value == "*":
        return value
    lowered = value.lower()
    if lowered != value:
        raise ValueError(f"invalid host {value!r}: write host names in lower case")
    if not HOST_RE.fullmatch(value):
        raise ValueError(
            f"invalid host {value!r}: expected '*', 'example.com' or '*.example.com' "
            "(letters, digits, '-' and '.', no port)"
        )
    return value


def _check_path_prefix(value: str) -> str:
    if not PATH_PREFIX_RE.fullmatch(value):
        raise ValueError(
            f"invalid path_prefix {value!r}: must start with '/' and use only "
            "letters, digits and . _ ~ / - (no spaces, quotes, '%' or control characters)"
        )
    segments = value.split("/")[1:]
    inner = segments[:-1] if value.endswith("/") else segments
    if "//" in value or any(s in (".", "..") for s in inner) or value.endswith(("/.", "/..")):
        raise ValueError(f"invalid path_prefix {value!r}: no empty, '.' or '..' segments")
    if any(s.endswith(".") for s in inner):
        # requests whose path has a segment ending in '.' are refused before routes match
        raise ValueError(f"invalid path_prefix {value!r}: a segment cannot end with '.'")
    return value


def _check_server(value: str) -> str:
    if not SERVER_RE.fullmatch(value):
        raise ValueError(f"invalid server {value!r}: expected host:port")
    port = int(value.rsplit(":", 1)[1])
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid server {value!r}: port out of range")
    return value


def _check_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"invalid trusted source {value!r}: {exc}") from None


def _check_key_attribute(value: str) -> str:
    if value in PLAIN_KEY_ATTRIBUTES or ENTERPRISE_ATTR_RE.fullmatch(value):
        return value
    raise ValueError(
        f"invalid key attribute {value!r}: expected one of {', '.join(PLAIN_KEY_ATTRIBUTES)} "
        "or an extension attribute 'urn:...:<attribute>'"
    )


Slug = Annotated[str, _matching(SLUG_RE, "group slug")]
RouteName = Annotated[str, _matching(ROUTE_NAME_RE, "route name")]
Host = Annotated[str, AfterValidator(_check_host)]
PathPrefix = Annotated[str, AfterValidator(_check_path_prefix)]
Scope = Annotated[str, _matching(SCOPE_RE, "scope")]
FilePath = Annotated[str, _matching(FILE_PATH_RE, "file path")]
Server = Annotated[str, AfterValidator(_check_server)]
Network = Annotated[str, AfterValidator(_check_network)]
UpstreamHeader = Annotated[str, _matching(UPSTREAM_HEADER_RE, "header name")]
KeyAttribute = Annotated[str, AfterValidator(_check_key_attribute)]

RSA_EC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512"
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


# ---------------------------------------------------------------------------------------------
# Identity


class JwtVerifiedCache(_Model):
    """A cache of verified tokens: a stick table keyed by SHA-256 of the WHOLE bearer token.

    An entry is created only after ``jwt_verify`` accepted those exact bytes, and a hit skips
    only the signature check: alg/exp/nbf/iss/aud and the identity claim are still checked on
    every request, so a cached token still expires at its ``exp``."""

    enabled: bool = True
    ttl_seconds: int = Field(default=300, ge=1, le=3600)
    size: int = Field(default=1_000_000, ge=1, le=10_000_000)


class JwtSource(_Model):
    """Bearer JWT: signature checked by ``jwt_verify`` with a pinned algorithm; exp/nbf/iss/aud
    checked in config (``jwt_verify`` checks only the signature)."""

    algorithm: JwtAlgorithm
    public_key: FilePath | None = None  # PUBLIC KEY PEM, for RS*/ES*
    secret: Annotated[str, _matching(HMAC_SECRET_RE, "HMAC secret")] | None = None  # HS*
    issuer: Annotated[str, _matching(URLISH_RE, "issuer")]
    audience: Annotated[str, _matching(URLISH_RE, "audience")]
    claim: Annotated[str, _matching(CLAIM_RE, "claim name")] = "email"
    scope_claim: Annotated[str, _matching(CLAIM_RE, "claim name")] = "scope"
    leeway_seconds: int = Field(default=30, ge=0, le=600)
    verified_cache: JwtVerifiedCache = Field(default_factory=JwtVerifiedCache)

    @model_validator(mode="after")
    def _key_matches_algorithm(self) -> JwtSource:
        if self.algorithm in HMAC_ALGORITHMS:
            if self.secret is None or self.public_key is not None:
                raise ValueError(f"{self.algorithm} needs 'secret' (and no 'public_key')")
        elif self.public_key is None or self.secret is not None:
            raise ValueError(f"{self.algorithm} needs 'public_key' (and no 'secret')")
        return self


class HeaderSource(_Model):
    """Identity from a header set by a trusted front (oauth2-proxy and similar)."""

    name: Annotated[str, _matching(HEADER_NAME_RE, "header name")]
    trusted_sources: list[Network] = Field(min_length=1)


class MtlsSource(_Model):
    """Identity from the verified client certificate's subject.

    HAProxy 2.6 has no SAN fetch (``ssl_c_san`` arrives in 3.1), so only the subject's CN or
    emailAddress can be used.
    """

    field: Literal["subject_cn", "subject_email"]
    server_cert: FilePath | None = None  # used by the full config's bind line
    ca_file: FilePath | None = None


class Identity(_Model):
    source: Literal["jwt", "header", "mtls"]
    jwt: JwtSource | None = None
    header: HeaderSource | None = None
    mtls: MtlsSource | None = None
    key_attributes: list[KeyAttribute] = Field(default_factory=lambda: ["userName"], min_length=1)
    agents: AgentIdentity | None = None  # machine identities (policy.agents_model)

    @model_validator(mode="after")
    def _source_configured(self) -> Identity:
        if getattr(self, self.source) is None:
            raise ValueError(
                f"identity.source is {self.source!r} but identity.{self.source} is missing"
            )
        return self


def header_key(name: str) -> str:
    """The form under which backends may see a header name: case-folded, '_' read as '-'
    (CGI/WSGI/PHP environments turn both X-A-B and X_A_B into HTTP_X_A_B)."""
    return name.lower().replace("_", "-")


class IdentityHeaders(_Model):
    """The request headers that carry the caller's identity to a route's backend.

    Set only on identity-gated routes with a ``backend``; every client-sent copy (any case,
    ``_`` for ``-``) is removed from every request first. ``null`` turns a header off
    (``request_id`` is always sent)."""

    user: UpstreamHeader | None = "X-Scimgate-User"
    email: UpstreamHeader | None = "X-Scimgate-Email"
    actor: UpstreamHeader | None = "X-Scimgate-Actor"
    groups: UpstreamHeader | None = "X-Scimgate-Groups"
    request_id: UpstreamHeader = "X-Request-ID"

    def names(self) -> list[str]:
        """Every configured header name, request id included."""
        names = [self.user, self.email, self.actor, self.groups, self.request_id]
        return [n for n in names if n is not None]

    @model_validator(mode="after")
    def _distinct(self) -> IdentityHeaders:
        keys = [header_key(n) for n in self.names()]
        if len(set(keys)) != len(keys):
            raise ValueError("identity header names must differ (case and '_' / '-' ignored)")
        return self


# ---------------------------------------------------------------------------------------------
# Groups and routes


class PolicyGroup(_Model):
    """A policy group: the IdP groups (displayName or externalId) whose members hold it."""

    idp_groups: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(min_length=1)


class RouteFrom(_Model):
    """What a route matches: hosts (always case-insensitive) and a segment-aware path prefix,
    case-insensitive unless ``case_sensitive``."""

    hosts: list[Host] = Field(default_factory=lambda: ["*"], min_length=1)
    path_prefix: PathPrefix = "/"
    case_sensitive: bool = False


class RouteTo(_Model):
    return_: Annotated[str, _matching(RETURN_TEXT_RE, "return text")] | None = Field(
        default=None, alias="return"
    )
    backend: Annotated[str, _matching(BACKEND_NAME_RE, "backend name")] | None = None
    servers: list[Server] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_target(self) -> RouteTo:
        if (self.return_ is None) == (self.backend is None):
            raise ValueError("'to' needs exactly one of 'return' or 'backend'")
        if self.backend is not None:
            if not self.servers:
                raise ValueError("'to.backend' needs at least one entry in 'servers'")
            if self.backend.lower().startswith(RESERVED_BACKEND_PREFIX):
                raise ValueError(
                    f"backend names starting with {RESERVED_BACKEND_PREFIX!r} are reserved"
                )
        elif self.servers:
            raise ValueError("'servers' only goes with 'backend'")
        return self


class Route(_Model):
    """A route: identity-gated (``allow_groups``) or open (``public: true``, or
    ``allow_sources``: no identity asked, none passed on)."""

    name: RouteName
    from_: RouteFrom = Field(alias="from")
    public: bool = False
    allow_sources: list[Network] = Field(default_factory=list)
    allow_groups: list[
        Annotated[str, _matching(re.compile(r"^(?:any|[a-z0-9_-]{1,32})$"), "group")]
    ] = Field(default_factory=list)
    require_scopes: list[Scope] = Field(default_factory=list)
    # Agents are let in only where a route says so, separately from people.
    allow_agents: AllowAgents | None = None
    rate_limit: RateLimit | None = None  # per pseudonymous identity
    to: RouteTo

    @property
    def is_open(self) -> bool:
        """Served without asking for an identity (public or source-limited)."""
        return not self.allow_groups and self.allow_agents is None

    @model_validator(mode="after")
    def _one_access_rule(self) -> Route:
        gated = bool(self.allow_groups) or self.allow_agents is not None
        rules = [self.public, bool(self.allow_sources), gated]
        if sum(rules) != 1:
            raise ValueError(
                "a route needs exactly one of 'allow_groups' (and/or 'allow_agents'), "
                "'public: true' or 'allow_sources'"
            )
        if self.rate_limit is not None and self.is_open:
            raise ValueError("rate_limit needs allow_groups or allow_agents (it is per identity)")
        if self.require_scopes and self.is_open:
            raise ValueError("require_scopes needs allow_groups (open routes ask no identity)")
        return self


class Policy(_Model):
    """A validated policy. ``base_dir`` resolves relative file paths (set by the loader)."""

    identity: Identity
    groups: dict[Slug, PolicyGroup] = Field(default_factory=dict)
    routes: list[Route] = Field(min_length=1)
    identity_headers: IdentityHeaders = Field(default_factory=IdentityHeaders)
    default: Literal["deny"] = "deny"
    base_dir: str | None = None

    def resolve_path(self, path: str) -> str:
        """An absolute form of a policy-relative path (relative to the policy file)."""
        p = Path(path)
        if p.is_absolute() or self.base_dir is None:
            return str(p)
        return str(Path(self.base_dir) / p)


# ---------------------------------------------------------------------------------------------
# YAML with node marks

Loc = tuple[str | int, ...]


@dataclass
class _Marks:
    values: dict[Loc, tuple[int, int]]
    keys: dict[Loc, tuple[int, int]]

    def locate(self, loc: Loc, *, prefer_key: bool = False) -> tuple[int, int]:
        probe = tuple(loc)
        while True:
            if prefer_key and probe in self.keys:
                return self.keys[probe]
            if probe in self.values:
                return self.values[probe]
            if not probe:
                return (0, 0)
            probe = probe[:-1]


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _walk(node: yaml.Node, loc: Loc, marks: _Marks) -> Iterator[tuple[Loc, tuple[int, int], str]]:
    """Record marks; yield duplicate-key problems (PyYAML silently keeps the last one)."""
    marks.values[loc] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            child = (*loc, key)
            if key in seen:
                yield child, _mark(key_node), f"duplicate key {key!r}"
            seen.add(key)
            marks.keys[child] = _mark(key_node)
            yield from _walk(value_node, child, marks)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _walk(item, (*loc, index), marks)


def _error_loc(error: Any) -> Loc:
    # pydantic reports tagged/Literal/Annotated branches as extra loc parts; keep only the
    # parts that exist in the document, and map field names back to their YAML aliases.
    aliases = {"from_": "from", "return_": "return"}
    return tuple(aliases.get(p, p) if isinstance(p, str) else p for p in error["loc"])


def _format_error(error: Any) -> str:
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r}"
    if kind == "missing":
        return f"missing required key {error['loc'][-1]!r}"
    return message


def parse_policy(
    text: str, source_name: str = "<policy>", *, base_dir: str | None = None
) -> Policy:
    """Parse and validate policy YAML; raise :class:`PolicyError` listing every problem."""

    def problem(line_col: tuple[int, int], message: str) -> PolicyProblem:
        return PolicyProblem(source_name, line_col[0], line_col[1], message)

    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            raise PolicyError([problem(where, f"YAML syntax: {exc.problem or exc}")]) from None
        except yaml.YAMLError as exc:
            raise PolicyError([problem((0, 0), f"YAML: {exc}")]) from None
    finally:
        loader.dispose()

    if node is None or not isinstance(data, dict):
        where = _mark(node) if node is not None else (1, 1)
        raise PolicyError([problem(where, "the policy must be a YAML mapping")])

    marks = _Marks({}, {})
    problems = [problem(mark, msg) for _loc, mark, msg in _walk(node, (), marks)]
    if "base_dir" in data:
        problems.append(
            problem(marks.locate(("base_dir",), prefer_key=True), "unknown key 'base_dir'")
        )
        data = {k: v for k, v in data.items() if k != "base_dir"}
    if problems:
        raise PolicyError(problems)

    from scimgate.policy.checks import semantic_problems  # it reads these models

    try:
        policy = Policy.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        errors = exc.errors()
        for error in errors:
            loc = _error_loc(error)
            prefer_key = error.get("type") == "extra_forbidden"
            if loc and loc[-1] == "[key]":  # a bad mapping key: point at the key itself
                loc, prefer_key = loc[:-1], True
            if error.get("type") == "missing":
                loc = loc[:-1]
            where = marks.locate(loc, prefer_key=prefer_key)
            path = _shown_path(p for p in _error_loc(error) if p != "[key]")
            problems.append(problem(where, f"{path}: {_format_error(error)}"))
        # One pass finds everything: check the cross-references (groups, reachability) of
        # what is valid, so that a key typo does not hide an undefined group.
        partial = _valid_part(data, errors, base_dir)
        if partial is not None:
            policy_part, numbers = partial
            problems.extend(
                problem(marks.locate(loc, prefer_key=True), message)
                for loc, message in semantic_problems(policy_part, numbers)
            )
        raise PolicyError(sorted(problems, key=lambda p: (p.line, p.column))) from None

    problems.extend(
        problem(marks.locate(loc, prefer_key=True), message)
        for loc, message in semantic_problems(policy)
    )
    if problems:
        raise PolicyError(problems)
    return policy


def _shown_path(parts: Iterable[str | int]) -> str:
    """``routes #2.allow_groups #1``: list positions count from 1, as in every message."""
    shown = ""
    for part in parts:
        if isinstance(part, int):
            shown += f" #{part + 1}"
        else:
            shown += ("." if shown else "") + part
    return shown or "(top level)"


def _valid_part(
    data: dict[str, Any], errors: list[Any], base_dir: str | None
) -> tuple[Policy, list[int]] | None:
    """The policy without its unknown keys and its invalid routes, and the number (from 1)
    of each route kept; None when what is invalid lies outside the routes (identity,
    groups: nothing can be cross-checked without them)."""
    cleaned = copy.deepcopy(data)
    dropped_routes: set[int] = set()
    for error in errors:
        loc = _error_loc(error)
        if error.get("type") == "extra_forbidden" and _drop_key(cleaned, loc):
            continue
        if len(loc) >= 2 and loc[0] == "routes" and isinstance(loc[1], int):
            dropped_routes.add(loc[1])
            continue
        return None
    routes = cleaned.get("routes")
    numbers: list[int] = []
    if isinstance(routes, list):
        numbers = [i + 1 for i in range(len(routes)) if i not in dropped_routes]
        cleaned["routes"] = [r for i, r in enumerate(routes) if i not in dropped_routes]
    try:
        return Policy.model_validate({**cleaned, "base_dir": base_dir}), numbers
    except ValidationError:
        return None


def _drop_key(data: Any, loc: Loc) -> bool:
    """Remove the key at ``loc`` (a YAML alias path); False when the path is not there."""
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(node, dict) and loc and loc[-1] in node:
        del node[loc[-1]]
        return True
    return False


def load_policy(path: str | Path) -> Policy:
    """Read and parse a policy file; relative file paths in it are relative to its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(
            [PolicyProblem(str(p), 0, 0, f"cannot read policy file: {exc}")]
        ) from None
    return parse_policy(text, str(p), base_dir=str(p.resolve().parent))
