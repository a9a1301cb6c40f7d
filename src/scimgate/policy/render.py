"""Render the HAProxy configuration that enforces a policy (plain, tested string building).

Two modes: ``full`` gives a complete ``haproxy.cfg``; ``fragment`` gives only the frontend
rules to paste into an existing ``mode http`` frontend, with the global lines it needs as
comments. Targets HAProxy 2.6 (Debian 12) and newer; every construct used here was checked
with ``haproxy -c`` and live requests on 2.6.12.

Request pipeline (first failing step answers):
  1. ambiguous paths (encoded unreserved chars, ``//``, dot segments) -> 400
  2. identity (JWT / trusted header / mTLS subject) missing or invalid -> 401; a JWT's
     signature check is skipped when SHA-256 of the whole token is in the verified-token
     cache (entries are only created after jwt_verify succeeded; claims are always checked)
  3. pseudonym key absent from the identities map (unknown or deprovisioned user) -> 403
  4. no route matches (routes in file order, first match wins) -> 403 (default deny)
  5. the route's groups or required scopes not held -> 403
  6. allow: ``return`` the route's text or ``use_backend``

The only I/O is the optional ``check_files`` step, which reads the JWT public key (and mTLS
files) to fail early: HAProxy 2.6 accepts a certificate PEM in ``jwt_verify`` without a
warning and then rejects every token at runtime.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from scimgate.policy.compiler import (
    OVERLAY_MAP_NAME,
    OVERLAY_TOMBSTONE,
    VALID_SHARD_COUNTS,
    map_file_name,
)
from scimgate.policy.model import (
    ANY_GROUP,
    FILE_PATH_RE,
    HMAC_ALGORITHMS,
    Policy,
    Route,
)


class RenderError(ValueError):
    """The render arguments (or files the policy points at) are unusable."""


BIND_RE = re.compile(r"^(?:[0-9.]{7,15}|\*|\[[0-9a-fA-F:.]{2,45}\])?:[0-9]{1,5}$")
LOG_TARGET_RE = re.compile(r"^[A-Za-z0-9._/:@-]+(?: [A-Za-z0-9._/:@-]+){0,5}$")
BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
FRONTEND_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")

# Paths a backend may decode or normalise into another route's prefix: percent-encoded
# unreserved characters, '%', '/', '\'; '//'; '.' and '..' segments (also Tomcat's '/..;/').
AMBIGUOUS_PATH_REGEX = "(%(2[5DEF]|3[0-9]|[46][1-9A-F]|[57][0-9A]|5[CF]|7E))|//|/[.][.]?([/;]|$)"

_UNAUTHENTICATED_BODY = '\'{"error":"unauthenticated","status":401}\''
_FORBIDDEN_BODY = '\'{"error":"forbidden","status":403}\''
_BAD_PATH_BODY = '\'{"error":"ambiguous path","status":400}\''

V_IDENTITY = "txn.scimgate_identity"
V_KEY = "txn.scimgate_key"
V_GROUPS = "txn.scimgate_groups"
V_ROUTE = "txn.scimgate_route"
V_DECISION = "txn.scimgate_decision"
V_SCOPES = "txn.scimgate_scopes"
V_HMAC = "proc.scimgate_hmac"

# The verified-token cache: a stick table in its own backend (a frontend holds one table at
# most, and the fragment's host frontend may already have one), filled through stick counter
# sc2 (the last one 2.6 has; the fragment notes reserve it).
JWT_CACHE_TABLE = "scimgate_jwt_cache"
JWT_CACHE_SC = 2


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise RenderError(message)


def _acl_name(kind: str, name: str) -> str:
    return f"scimgate_{kind}_{name}"


def _deny(status: int, decision: str, condition: str, *, bearer: bool = False) -> list[str]:
    if status == 401:
        body = _UNAUTHENTICATED_BODY
        extra = " hdr WWW-Authenticate 'Bearer realm=\"scimgate\"'" if bearer else ""
    elif status == 400:
        body, extra = _BAD_PATH_BODY, ""
    else:
        body, extra = _FORBIDDEN_BODY, ""
    return [
        f"http-request set-var({V_DECISION}) str({decision}) if {condition}",
        f"http-request deny deny_status {status} content-type application/json string {body}{extra} if {condition}",
    ]


def _check_public_key(path: str) -> None:
    try:
        head = Path(path).read_text(encoding="ascii", errors="replace")[:4096]
    except OSError as exc:
        raise RenderError(f"JWT public key {path!r} cannot be read: {exc}") from None
    if "-----BEGIN CERTIFICATE-----" in head:
        raise RenderError(
            f"JWT public key {path!r} is a certificate: HAProxy 2.6 needs a "
            "'-----BEGIN PUBLIC KEY-----' PEM (with a certificate every token fails, silently)"
        )
    _require(
        "-----BEGIN PUBLIC KEY-----" in head,
        f"JWT public key {path!r} is not a '-----BEGIN PUBLIC KEY-----' PEM",
    )


def _resolved_file(policy: Policy, path: str, what: str, check: bool) -> str:
    resolved = policy.resolve_path(path)
    _require(
        bool(FILE_PATH_RE.fullmatch(resolved)),
        f"{what} path {resolved!r} has characters that cannot go into haproxy.cfg",
    )
    if check and not Path(resolved).is_file():
        raise RenderError(f"{what} {resolved!r} does not exist")
    return resolved


# ---------------------------------------------------------------------------------------------
# Identity extraction


def _jwt_rules(policy: Policy, check_files: bool) -> list[str]:
    jwt = policy.identity.jwt
    assert jwt is not None
    alg = jwt.algorithm
    if alg in HMAC_ALGORITHMS:
        assert jwt.secret is not None
        key = jwt.secret
    else:
        assert jwt.public_key is not None
        key = _resolved_file(policy, jwt.public_key, "JWT public key", check_files)
        if check_files:
            _check_public_key(key)
    leeway = jwt.leeway_seconds
    bearer = "var(txn.scimgate_bearer)"
    claims_ok = (
        "scimgate_jwt_alg_ok scimgate_jwt_exp_ok !scimgate_jwt_nbf_bad "
        "scimgate_jwt_iss_ok scimgate_jwt_aud_ok"
    )
    identity = f"http-request set-var({V_IDENTITY}) {bearer},jwt_payload_query('$.{jwt.claim}')"
    head = [
        f"# identity: JWT bearer. The algorithm is pinned to the literal {alg} (never the",
        "# token's own 'alg': alg-confusion); jwt_verify checks only the signature, so",
        f"# exp / nbf / iss / aud are checked here (leeway {leeway} s). Signature check runs last.",
        "http-request set-var(txn.scimgate_bearer) http_auth_bearer",
        "http-request set-var(txn.scimgate_now) date",
    ]
    cached = jwt.verified_cache.enabled
    # With the cache, the claims are decoded only on a miss (a hit re-checks exp, from the entry).
    unless_cached = " if !scimgate_jwt_cached" if cached else ""
    checks = [
        f"http-request set-var(txn.scimgate_jwt_alg) {bearer},jwt_header_query('$.alg'){unless_cached}",
        f"http-request set-var(txn.scimgate_jwt_exp) {bearer},jwt_payload_query('$.exp','int'){unless_cached}",
        f"http-request set-var(txn.scimgate_jwt_nbf) {bearer},jwt_payload_query('$.nbf','int'){unless_cached}",
        f"http-request set-var(txn.scimgate_jwt_iss) {bearer},jwt_payload_query('$.iss'){unless_cached}",
        f"http-request set-var(txn.scimgate_jwt_aud) {bearer},jwt_payload_query('$.aud'){unless_cached}",
        f"acl scimgate_jwt_alg_ok var(txn.scimgate_jwt_alg) -m str {alg}",
        f"acl scimgate_jwt_exp_ok var(txn.scimgate_jwt_exp),add({leeway}),sub(txn.scimgate_now) -m int gt 0",
        f"acl scimgate_jwt_nbf_bad var(txn.scimgate_jwt_nbf),sub(txn.scimgate_now) -m int gt {leeway}",
        f"acl scimgate_jwt_iss_ok var(txn.scimgate_jwt_iss) -m str '{jwt.issuer}'",
        f"acl scimgate_jwt_aud_ok var(txn.scimgate_jwt_aud) -m str '{jwt.audience}'",
        f'acl scimgate_jwt_sig_ok {bearer},jwt_verify("{alg}","{key}") -m int 1',
    ]
    if not cached:
        return [*head, *checks, f"{identity} if {claims_ok} scimgate_jwt_sig_ok"]
    sc = JWT_CACHE_SC
    store = "{ var(txn.scimgate_jwt_store) -m bool }"
    return [
        *head,
        "# verified-token cache, looked up first: key = SHA-256 of the WHOLE bearer token (the",
        "# bytes jwt_verify checks); gpt0 = the token's exp. An entry is created only after",
        "# jwt_verify and every claim check accepted those exact bytes. A hit skips the signature",
        "# and the claim decodes (the same bytes carry the same alg, iss, aud and nbf, and a",
        "# config change restarts the table) but still re-checks exp, from the entry, on every",
        f"# request. Entries live {jwt.verified_cache.ttl_seconds} s after verification.",
        f"http-request set-var(txn.scimgate_jwt_digest) {bearer},sha2(256)",
        "http-request set-var(txn.scimgate_jwt_cached_exp) "
        f"var(txn.scimgate_jwt_digest),table_gpt0({JWT_CACHE_TABLE})",
        "acl scimgate_jwt_cached var(txn.scimgate_jwt_cached_exp),"
        f"add({leeway}),sub(txn.scimgate_now) -m int gt 0",
        "http-request set-var(txn.scimgate_jwt_cached) bool(1) if scimgate_jwt_cached",
        *checks,
        "http-request set-var(txn.scimgate_jwt_verified) bool(1) "
        f"if !scimgate_jwt_cached {claims_ok} scimgate_jwt_sig_ok",
        "acl scimgate_jwt_verified var(txn.scimgate_jwt_verified) -m bool",
        f"# store: only a freshly verified token, and only if sc{sc} is free (so sc-set-gpt0 can",
        f"# only ever mark the entry this request just tracked in {JWT_CACHE_TABLE})",
        "http-request set-var(txn.scimgate_jwt_store) bool(1) "
        f"if scimgate_jwt_verified !{{ sc_tracked({sc}) }}",
        f"http-request track-sc{sc} var(txn.scimgate_jwt_digest) table {JWT_CACHE_TABLE} "
        f"if {store}",
        f"http-request sc-set-gpt0({sc}) var(txn.scimgate_jwt_exp) if {store}",
        f"{identity} if scimgate_jwt_cached || scimgate_jwt_verified",
    ]


def _jwt_cache_table(policy: Policy) -> str | None:
    """The cache's ``stick-table`` line, or None when there is no verified-token cache."""
    jwt = policy.identity.jwt
    if policy.identity.source != "jwt" or jwt is None or not jwt.verified_cache.enabled:
        return None
    cache = jwt.verified_cache
    return (
        f"stick-table type binary len 32 size {cache.size} expire {cache.ttl_seconds}s store gpt0"
    )


def _header_rules(policy: Policy) -> list[str]:
    header = policy.identity.header
    assert header is not None
    name = header.name
    return [
        f"# identity: header {name}, honoured only from trusted sources; read whole",
        "# (req.fhdr, no comma splitting) and refused when repeated or comma-separated.",
        f"acl scimgate_trusted_src src {' '.join(header.trusted_sources)}",
        f"http-request del-header {name} unless scimgate_trusted_src",
        f"http-request set-var({V_IDENTITY}) req.fhdr({name}) if {{ req.hdr_cnt({name}) eq 1 }}",
    ]


def _mtls_rules(policy: Policy) -> list[str]:
    mtls = policy.identity.mtls
    assert mtls is not None
    entry = "CN" if mtls.field == "subject_cn" else "emailAddress"
    return [
        f"# identity: verified client certificate, subject {entry} (HAProxy 2.6 has no SAN fetch)",
        f"http-request set-var({V_IDENTITY}) ssl_c_s_dn({entry}) "
        "if { ssl_c_used } { ssl_c_verify -m int eq 0 }",
    ]


# ---------------------------------------------------------------------------------------------
# Routes


def _route_match_acls(route: Route) -> tuple[list[str], str]:
    lines: list[str] = []
    parts: list[str] = []
    if "*" not in route.from_.hosts:
        host_acl = _acl_name("host", route.name)
        for host in route.from_.hosts:
            if host.startswith("*."):
                lines.append(f"acl {host_acl} req.fhdr(host),host_only -m end {host[1:]}")
            else:
                lines.append(f"acl {host_acl} req.fhdr(host),host_only -m str {host}")
        parts.append(host_acl)
    prefix = route.from_.path_prefix
    if prefix != "/":
        path_acl = _acl_name("path", route.name)
        if prefix.endswith("/"):
            lines.append(f"acl {path_acl} path_beg {prefix}")
        else:
            # segment-aware: /admin matches /admin and /admin/..., not /administrator
            lines.append(f"acl {path_acl} path -m str {prefix}")
            lines.append(f"acl {path_acl} path_beg {prefix}/")
        parts.append(path_acl)
    return lines, " ".join(parts)


def _frontend_rules(
    policy: Policy,
    *,
    map_dir: str,
    shards: int,
    check_files: bool,
    debug_headers: bool,
) -> list[str]:
    source = policy.identity.source
    bearer = source == "jwt"
    out: list[str] = [
        "# --- scimgate: request id and log line (the pseudonym key, never the identity) ---",
        "unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid",
        "unique-id-header X-Request-ID",
        'log-format "%ci:%cp [%tr] %ft %ST %B %Tr id=%ID'
        f" key=%[var({V_KEY})] groups=%[var({V_GROUPS})] route=%[var({V_ROUTE})]"
        f' decision=%[var({V_DECISION})] %HM %{{+Q}}HPO"',
        "http-request del-header X-Request-ID",
        "http-after-response set-header X-Request-ID %[unique-id]",
        "",
        "# --- scimgate: paths that could be decoded into another route's prefix ---",
        f"acl scimgate_ambiguous_path path -m reg -i '{AMBIGUOUS_PATH_REGEX}'",
        *_deny(400, "ambiguous_path", "scimgate_ambiguous_path"),
        "",
    ]
    if source == "jwt":
        out += _jwt_rules(policy, check_files)
    elif source == "header":
        out += _header_rules(policy)
    else:
        out += _mtls_rules(policy)
    out += [
        "# identities are printable ASCII without spaces (2.6 decodes JSON \\u escapes to Latin-1)",
        f"acl scimgate_identity_ok var({V_IDENTITY}) -m len gt 0",
        f"acl scimgate_identity_ok_chars var({V_IDENTITY}) -m reg '^[!-~]+$'",
        *_deny(
            401,
            "unauthenticated",
            "!scimgate_identity_ok || !scimgate_identity_ok_chars",
            bearer=bearer,
        ),
        "",
        "# --- scimgate: pseudonym key -> policy groups (absent = unknown or deprovisioned) ---",
        f"http-request set-var({V_KEY}) var({V_IDENTITY}),lower,hmac(sha256,{V_HMAC}),hex",
    ]
    # The overlay first, and a shard only where it has no entry. This order is what makes
    # the engine's "shard first, then remove the overlay entry" safe for a request that
    # runs between the two: it sees the overlay's entry or, once gone, the updated shard.
    overlay = f"{map_dir}/{OVERLAY_MAP_NAME}"
    out += [
        "# the overlay: recent changes, ahead of the shards (an entry wins; the tombstone",
        f"# '{OVERLAY_TOMBSTONE}' means deprovisioned); small, so updates there never stall",
        f"http-request set-var({V_GROUPS}) var({V_KEY}),map({overlay})",
    ]
    if shards == 1:
        path = f"{map_dir}/{map_file_name(0, 1)}"
        out.append(
            f"http-request set-var({V_GROUPS}) var({V_KEY}),map({path}) "
            f"if !{{ var({V_GROUPS}) -m found }}"
        )
    else:
        width = 1 if shards == 16 else 2
        for shard in range(shards):
            path = f"{map_dir}/{map_file_name(shard, shards)}"
            out.append(
                f"http-request set-var({V_GROUPS}) var({V_KEY}),map({path}) "
                f"if {{ var({V_KEY}) -m beg {shard:0{width}X} }} !{{ var({V_GROUPS}) -m found }}"
            )
    out += [
        f"acl scimgate_known var({V_GROUPS}) -m beg ,",
        *_deny(403, "unknown_identity", "!scimgate_known"),
    ]

    needs_scopes = any(r.require_scopes for r in policy.routes)
    if needs_scopes:
        jwt = policy.identity.jwt
        assert jwt is not None
        out += [
            "",
            f"# --- scimgate: scopes ('{jwt.scope_claim}' claim, space-separated), space-wrapped for whole-word matching ---",
            f"http-request set-var(txn.scimgate_jwt_scope) var(txn.scimgate_bearer),jwt_payload_query('$.{jwt.scope_claim}')",
            f'http-request set-var-fmt({V_SCOPES}) " %[var(txn.scimgate_jwt_scope)] "',
        ]

    out += ["", "# --- scimgate: routes, in policy order; the first match wins ---"]
    for route in policy.routes:
        lines, condition = _route_match_acls(route)
        out += lines
        when = f" {condition}" if condition else ""
        out.append(
            f"http-request set-var({V_ROUTE}) str({route.name}) if !{{ var({V_ROUTE}) -m found }}{when}"
        )
    out += _deny(403, "no_route", f"!{{ var({V_ROUTE}) -m found }}")

    out += ["", "# --- scimgate: per-route groups and scopes ---"]
    used_slugs = sorted({g for r in policy.routes for g in r.allow_groups if g != ANY_GROUP})
    for slug in used_slugs:
        out.append(f"acl {_acl_name('group', slug)} var({V_GROUPS}) -m sub ,{slug},")
    for route in policy.routes:
        is_route = _acl_name("route", route.name)
        out.append(f"acl {is_route} var({V_ROUTE}) -m str {route.name}")
        if ANY_GROUP not in route.allow_groups:
            lacking = " ".join(f"!{_acl_name('group', g)}" for g in route.allow_groups)
            out += _deny(403, "group_denied", f"{is_route} {lacking}")
        for scope in route.require_scopes:
            out += _deny(
                403, "scope_missing", f"{is_route} !{{ var({V_SCOPES}) -m sub ' {scope} ' }}"
            )

    out += ["", "# --- scimgate: allowed ---", f"http-request set-var({V_DECISION}) str(allow)"]
    if debug_headers:
        out += [
            "# debug headers (render option debug_headers=True): never in production",
            f"http-after-response set-header X-Scimgate-Key %[var({V_KEY})]",
            f"http-after-response set-header X-Scimgate-Groups %[var({V_GROUPS})]",
            f"http-after-response set-header X-Scimgate-Route %[var({V_ROUTE})]",
            f"http-after-response set-header X-Scimgate-Decision %[var({V_DECISION})]",
        ]
        if _jwt_cache_table(policy) is not None:
            # 1 / 0 = cache hit / miss; Verified = 1 only when jwt_verify ran and accepted
            out += [
                "http-after-response set-header X-Scimgate-Jwt-Cached %[var(txn.scimgate_jwt_cached)]",
                "http-after-response set-header X-Scimgate-Jwt-Verified %[var(txn.scimgate_jwt_verified)]",
            ]
    for route in policy.routes:
        is_route = _acl_name("route", route.name)
        if route.to.return_ is not None:
            out.append(
                f'http-request return status 200 content-type text/plain string "{route.to.return_}" if {is_route}'
            )
    for route in policy.routes:
        if route.to.backend is not None:
            out.append(f"use_backend {route.to.backend} if {_acl_name('route', route.name)}")
    return out


def _backends(policy: Policy) -> dict[str, list[str]]:
    backends: dict[str, list[str]] = {}
    for route in policy.routes:
        if route.to.backend is not None:
            backends.setdefault(route.to.backend, list(route.to.servers))
    return backends


# ---------------------------------------------------------------------------------------------


def render_config(
    policy: Policy,
    *,
    mode: Literal["full", "fragment"] = "full",
    map_dir: str,
    shards: int = 1,
    hmac_secret_b64: str,
    bind: str = "127.0.0.1:8080",
    stats_socket: str = "/run/scimgate/haproxy-admin.sock",
    master_socket: str | None = None,
    log_target: str = "stdout format raw",
    frontend_name: str = "fe_scimgate",
    check_files: bool = True,
    debug_headers: bool = False,
    scim_frontend: Sequence[str] = (),
) -> str:
    """The HAProxy configuration enforcing ``policy``.

    ``map_dir`` holds the identities map file(s) (``map_file_names(shards)`` and the overlay
    ``OVERLAY_MAP_NAME``; they must exist when HAProxy starts). ``hmac_secret_b64`` is the pseudonym secret, base64 (>= 16 bytes);
    it is written into the config, so keep the file mode 0600. ``master_socket`` turns on
    master-worker mode (HAProxy 2.6 binds the master CLI only from the command line:
    ``-S <master_socket>,mode,600``). ``log_target`` is the ``log`` address and options
    (``stdout format raw``, ``/dev/log``, ``127.0.0.1:514``); facility local0 is appended.
    ``scim_frontend`` (top-level lines from ``render_scim.render_scim_front``) is appended to a
    full config; a fragment only notes where to get it.
    """
    _require(mode in ("full", "fragment"), f"mode must be 'full' or 'fragment', not {mode!r}")
    _require(shards in VALID_SHARD_COUNTS, f"shards must be one of {VALID_SHARD_COUNTS}")
    map_dir = map_dir.rstrip("/") or "/"
    _require(
        map_dir.startswith("/") and bool(FILE_PATH_RE.fullmatch(map_dir)),
        f"map_dir must be an absolute path of letters, digits and . _ / + -: {map_dir!r}",
    )
    _require(bool(BASE64_RE.fullmatch(hmac_secret_b64)), "hmac_secret_b64 is not base64")
    try:
        secret = base64.b64decode(hmac_secret_b64, validate=True)
    except (binascii.Error, ValueError):
        raise RenderError("hmac_secret_b64 is not base64") from None
    _require(len(secret) >= 16, "the HMAC secret must be at least 16 bytes")
    _require(
        bool(FRONTEND_NAME_RE.fullmatch(frontend_name)), f"invalid frontend name {frontend_name!r}"
    )

    rules = _frontend_rules(
        policy, map_dir=map_dir, shards=shards, check_files=check_files, debug_headers=debug_headers
    )
    hmac_line = f"set-var {V_HMAC} str({hmac_secret_b64})"
    backends = _backends(policy)
    cache_table = _jwt_cache_table(policy)

    if mode == "fragment":
        notes = [
            "# scimgate policy fragment: paste into a 'mode http' frontend (before its own",
            "# http-request rules). Generated; edit the policy file instead.",
            "# Needed in the global section (the pseudonym secret; keep haproxy.cfg mode 0600):",
            f"#     {hmac_line}",
            "# Needed: the map file(s) below must exist before HAProxy starts (may be empty).",
        ]
        if backends:
            notes.append("# Needed backends (this fragment routes to them with use_backend):")
            notes += [f"#     {name}: {', '.join(servers)}" for name, servers in backends.items()]
        if cache_table is not None:
            notes += [
                "# Needed: the verified-token cache's backend (and no other track-sc"
                f"{JWT_CACHE_SC} in this frontend):",
                f"#     backend {JWT_CACHE_TABLE}",
                f"#         {cache_table}",
            ]
        if scim_frontend:
            notes.append(
                "# The SCIM endpoint's own frontend and backend (scim_front): "
                "scimgate haproxy render --mode scim"
            )
        return "\n".join([*notes, "", *rules]) + "\n"

    _require(bool(BIND_RE.fullmatch(bind)), f"invalid bind address {bind!r} (expected ip:port)")
    _require(
        bool(FILE_PATH_RE.fullmatch(stats_socket)), f"invalid stats socket path {stats_socket!r}"
    )
    _require(bool(LOG_TARGET_RE.fullmatch(log_target)), f"invalid log target {log_target!r}")
    bind_line = f"bind {bind}"
    if policy.identity.source == "mtls":
        mtls = policy.identity.mtls
        assert mtls is not None
        _require(
            mtls.server_cert is not None and mtls.ca_file is not None,
            "identity.mtls needs server_cert and ca_file for a full config",
        )
        assert mtls.server_cert is not None and mtls.ca_file is not None
        crt = _resolved_file(policy, mtls.server_cert, "mTLS server certificate", check_files)
        ca = _resolved_file(policy, mtls.ca_file, "mTLS CA file", check_files)
        bind_line += f" ssl crt {crt} ca-file {ca} verify required"

    glob = [
        "global",
        f"    log {log_target} local0",
        f"    stats socket {stats_socket} mode 600 level admin expose-fd listeners",
        "    # the Runtime API's prompt connections are closed after 10 s idle by default",
        "    stats timeout 1h",
        "    # pseudonym secret (base64) for hmac(sha256,...): keep this file mode 0600",
        f"    {hmac_line}",
        "    # no pattern-match LRU cache: every request brings a new pseudonym key, so the",
        "    # cache only adds a hash, a lock and an eviction to each of the ~20 string ACLs",
        "    # (measured: ~100 -> ~60 us of HAProxy CPU per request, bench/analysis.md)",
        "    tune.pattern.cache-size 0",
    ]
    if master_socket is not None:
        _require(
            bool(FILE_PATH_RE.fullmatch(master_socket)),
            f"invalid master socket path {master_socket!r}",
        )
        glob += [
            "    master-worker",
            f"    # master CLI: HAProxy 2.6 binds it from the command line: -S {master_socket},mode,600",
        ]
    out = [
        "# Generated by scimgate from the policy file; edit the policy, not this file.",
        *glob,
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    timeout connect 5s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-request 10s",
        "    timeout tunnel 1h",
        "",
        f"frontend {frontend_name}",
        f"    {bind_line}",
        *[f"    {line}" if line else "" for line in rules],
    ]
    for name, servers in backends.items():
        out += ["", f"backend {name}"]
        out += [f"    server s{i + 1} {server}" for i, server in enumerate(servers)]
    if cache_table is not None:
        out += [
            "",
            "# verified tokens (SHA-256 of the whole token -> gpt0 = its exp); never shared with peers",
            f"backend {JWT_CACHE_TABLE}",
            f"    {cache_table}",
        ]
    if scim_frontend:
        out += ["", *scim_frontend]
    return "\n".join(out) + "\n"
