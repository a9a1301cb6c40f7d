"""Render the HAProxy configuration that enforces a policy (plain, tested string building).

Two modes: ``full`` gives a complete ``haproxy.cfg``; ``fragment`` gives only the frontend
rules to paste into an existing ``mode http`` frontend, with the global lines it needs as
comments. Targets HAProxy 2.6 (Debian 12) and newer; every construct used here was checked
with ``haproxy -c`` and live requests on 2.6.12.

Request pipeline (first failing step answers):
  0. client copies of the identity headers are removed (every request, every route)
  1. ambiguous targets (encoded unreserved chars, ``;``, backslashes, ``//``, dot segments,
     segments ending in ``.``, encoded controls, no or several Host headers) -> 400
  2. open routes (public / allow_sources): served here, without identity (source not in
     range -> 403); nothing below applies to them
  3. identity (JWT / trusted header / mTLS subject) missing or invalid -> 401; a JWT's
     signature check is skipped when SHA-256 of the whole token is in the verified-token
     cache (entries are only created after jwt_verify and the claim type checks succeeded)
  4. pseudonym key absent from the identities map (unknown or deprovisioned user) -> 403
  5. no identity-gated route matches (file order, first match wins) -> 403 (default deny)
  6. the route's groups or required scopes not held -> 403
  7. allow: ``return`` the route's text, or ``use_backend`` with the identity headers set

The rules live in render_routes.py (requests and routes) and render_identity.py (identity,
JWT claims, the verified-token cache, identity headers); this module assembles them.

The only I/O is the optional ``check_files`` step, which reads the JWT public key (and mTLS
files) to fail early: HAProxy 2.6 accepts a certificate PEM in ``jwt_verify`` without a
warning and then rejects every token at runtime.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Literal

from scimgate.policy.compiler import VALID_SHARD_COUNTS
from scimgate.policy.jwks import PinnedKey
from scimgate.policy.model import FILE_PATH_RE, Policy
from scimgate.policy.render_agents import (
    RATE_SC,
    delegate_lookup_rules,
    rate_limit_rules,
    rate_limit_tables,
)
from scimgate.policy.render_base import (
    V_DECISION,
    V_GROUPS,
    V_HMAC,
    V_KEY,
    V_ROUTE,
    RenderError,
    require,
    resolved_file,
)
from scimgate.policy.render_fleet import FLEET_HEARTBEAT_TABLE, heartbeat_table, strict_rules
from scimgate.policy.render_identity import (
    JWT_CACHE_SC,
    JWT_CACHE_TABLE,
    JWT_KID_MISS_TABLE,
    cutoff_rules,
    forwarded_identity_rules,
    identity_rules,
    jwt_cache_table,
    jwt_kid_miss_table,
    lookup_rules,
    scope_rules,
)
from scimgate.policy.render_routes import (
    answer_rules,
    backend_switch_rules,
    gated_route_rules,
    hygiene_rules,
    open_route_rules,
)
from scimgate.policy.sessions import (
    SESSIONS_SC,
    SESSIONS_TABLE,
    sessions_table,
    tracking_rules,
)

__all__ = ["RenderError", "render_config"]

TCP_SOCKET_RE = re.compile(r"^ipv4@[0-9.]{7,15}:[0-9]{1,5}$")
BIND_RE = re.compile(r"^(?:[0-9.]{7,15}|\*|\[[0-9a-fA-F:.]{2,45}\])?:[0-9]{1,5}$")
LOG_TARGET_RE = re.compile(r"^[A-Za-z0-9._/:@-]+(?: [A-Za-z0-9._/:@-]+){0,5}$")
BASE64_RE = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
FRONTEND_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def _frontend_rules(
    policy: Policy,
    *,
    map_dir: str,
    shards: int,
    check_files: bool,
    debug_headers: bool,
    strict_seconds: int | None = None,
    jwt_keys: Sequence[PinnedKey] = (),
) -> list[str]:
    request_id = policy.identity_headers.request_id
    out: list[str] = [
        *hygiene_rules(policy),
        "",
        "# --- scimgate: request id and log line (the pseudonym key, never the identity) ---",
        "unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid",
        f"unique-id-header {request_id}",
        'log-format "%ci:%cp [%tr] %ft %ST %B %Tr id=%ID'
        f" key=%[var({V_KEY})] groups=%[var({V_GROUPS})] route=%[var({V_ROUTE})]"
        f' decision=%[var({V_DECISION})] %HM %{{+Q}}HPO"',
        f"http-after-response set-header {request_id} %[unique-id]",
        *open_route_rules(policy),
        *(strict_rules() if strict_seconds is not None else []),
        "",
        *identity_rules(policy, check_files, jwt_keys),
        "",
        *lookup_rules(map_dir, shards),
        *delegate_lookup_rules(policy, map_dir, shards),
        *cutoff_rules(policy),  # after both lookups: splits the caller's and the delegate's
        *scope_rules(policy),
        *gated_route_rules(policy),
        *rate_limit_rules(policy),
        "",
        "# --- scimgate: allowed ---",
        f"http-request set-var({V_DECISION}) str(allow)",
        *tracking_rules(policy),
    ]
    if debug_headers:
        out += [
            "# debug headers (render option debug_headers=True): never in production",
            f"http-after-response set-header X-Scimgate-Key %[var({V_KEY})]",
            f"http-after-response set-header X-Scimgate-Groups %[var({V_GROUPS})]",
            f"http-after-response set-header X-Scimgate-Route %[var({V_ROUTE})]",
            f"http-after-response set-header X-Scimgate-Decision %[var({V_DECISION})]",
        ]
        if jwt_cache_table(policy) is not None:
            # 1 / 0 = cache hit / miss; Verified = 1 only when jwt_verify ran and accepted
            out += [
                "http-after-response set-header X-Scimgate-Jwt-Cached %[var(txn.scimgate_jwt_cached)]",
                "http-after-response set-header X-Scimgate-Jwt-Verified %[var(txn.scimgate_jwt_verified)]",
            ]
    return [
        *out,
        *answer_rules(policy),
        *forwarded_identity_rules(policy),
        *backend_switch_rules(policy),
    ]


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
    strict_seconds: int | None = None,
    jwt_keys: Sequence[PinnedKey] = (),
    hard_stop_after: float | None = None,
    hmac_secret_source: str = "the instance's hmac.key",
) -> str:
    """The HAProxy configuration enforcing ``policy``.

    ``map_dir`` holds the identities map file(s) (``map_file_names(shards)`` and the overlay
    ``OVERLAY_MAP_NAME``; they must exist when HAProxy starts). ``hmac_secret_b64`` is the pseudonym secret, base64 (>= 16 bytes);
    it is written into the config, so keep the file mode 0600. ``master_socket`` turns on
    master-worker mode (HAProxy 2.6 binds the master CLI only from the command line:
    ``-S <master_socket>,mode,600``). ``log_target`` is the ``log`` address and options
    (``stdout format raw``, ``/dev/log``, ``127.0.0.1:514``); facility local0 is appended.
    ``scim_frontend`` (top-level lines from ``render_scim.render_scim_front``) is appended to a
    full config; a fragment only notes where to get it. ``strict_seconds``: a fleet node in
    strict mode (``render_fleet``): identity-gated routes are denied once the agent's
    heartbeat entry is that many seconds old. ``jwt_keys``: the issuer's keys in JWKS mode
    (``identity.jwt.jwks``; none renders a config that refuses every token).
    ``hard_stop_after`` (seconds) bounds how long an old worker lives after a reload. A
    fragment never holds the secret itself (it goes to stdout, into terminals and CI logs):
    it names ``hmac_secret_source``.
    ``stats_socket`` is a unix socket path or ``ipv4@ADDRESS:PORT``.
    """
    require(
        strict_seconds is None or 1 <= strict_seconds <= 86400,
        f"strict_seconds must be 1..86400, not {strict_seconds!r}",
    )
    require(mode in ("full", "fragment"), f"mode must be 'full' or 'fragment', not {mode!r}")
    require(shards in VALID_SHARD_COUNTS, f"shards must be one of {VALID_SHARD_COUNTS}")
    map_dir = map_dir.rstrip("/") or "/"
    require(
        map_dir.startswith("/") and bool(FILE_PATH_RE.fullmatch(map_dir)),
        f"map_dir must be an absolute path of letters, digits and . _ / + -: {map_dir!r}",
    )
    require(bool(BASE64_RE.fullmatch(hmac_secret_b64)), "hmac_secret_b64 is not base64")
    try:
        secret = base64.b64decode(hmac_secret_b64, validate=True)
    except (binascii.Error, ValueError):
        raise RenderError("hmac_secret_b64 is not base64") from None
    require(len(secret) >= 16, "the HMAC secret must be at least 16 bytes")
    require(
        bool(FRONTEND_NAME_RE.fullmatch(frontend_name)), f"invalid frontend name {frontend_name!r}"
    )

    rules = _frontend_rules(
        policy,
        map_dir=map_dir,
        shards=shards,
        check_files=check_files,
        debug_headers=debug_headers,
        strict_seconds=strict_seconds,
        jwt_keys=jwt_keys,
    )
    hmac_line = f"set-var {V_HMAC} str({hmac_secret_b64})"
    backends = _backends(policy)
    cache_table = jwt_cache_table(policy)
    kid_miss_table = jwt_kid_miss_table(policy)

    if mode == "fragment":
        notes = [
            "# scimgate policy fragment: paste into a 'mode http' frontend (before its own",
            "# http-request rules). Generated; edit the policy file instead.",
            "# Needed in the global section (the pseudonym secret; keep haproxy.cfg mode 0600),",
            f"# with the base64 text of {hmac_secret_source} in place of <SECRET>:",
            f"#     set-var {V_HMAC} str(<SECRET>)",
            "# Needed: the map file(s) below must exist before HAProxy starts (may be empty).",
        ]
        if any(r.is_open for r in policy.routes):
            notes.append(
                "# Open routes end the http-request rules with 'allow': rules placed after "
                "this fragment do not run for them."
            )
        if backends:
            notes.append("# Needed backends (this fragment routes to them with use_backend):")
            notes += [f"#     {name}: {', '.join(servers)}" for name, servers in backends.items()]
        notes += [
            f"# Needed: the live-session table's backend (and no other track-sc{SESSIONS_SC}"
            " in this frontend):",
            f"#     backend {SESSIONS_TABLE}",
            f"#         {sessions_table()}",
        ]
        if cache_table is not None:
            notes += [
                "# Needed: the verified-token cache's backend (and no other track-sc"
                f"{JWT_CACHE_SC} in this frontend):",
                f"#     backend {JWT_CACHE_TABLE}",
                f"#         {cache_table}",
            ]
        if kid_miss_table is not None:
            notes += [
                "# Needed: the unknown-kid table's backend (scimgate reads it over the Runtime",
                "# API and fetches the JWKS at once; the same sc"
                f"{JWT_CACHE_SC} rule as the cache):",
                f"#     backend {JWT_KID_MISS_TABLE}",
                f"#         {kid_miss_table}",
            ]
        if strict_seconds is not None:
            notes += [
                "# Needed: the strict-mode heartbeat table (refreshed by the node's agent):",
                f"#     backend {FLEET_HEARTBEAT_TABLE}",
                f"#         {heartbeat_table(strict_seconds)}",
            ]
        for table, line in rate_limit_tables(policy).items():
            notes += [
                f"# Needed: a rate-limit table (and no other track-sc{RATE_SC} here):",
                f"#     backend {table}",
                f"#         {line}",
            ]
        if scim_frontend:
            notes.append(
                "# The SCIM endpoint's own frontend and backend (scim_front): "
                "scimgate haproxy render --mode scim"
            )
        return "\n".join([*notes, "", *rules]) + "\n"

    require(bool(BIND_RE.fullmatch(bind)), f"invalid bind address {bind!r} (expected ip:port)")
    require(
        bool(FILE_PATH_RE.fullmatch(stats_socket) or TCP_SOCKET_RE.fullmatch(stats_socket)),
        f"invalid stats socket {stats_socket!r} (a unix socket path or ipv4@ADDRESS:PORT)",
    )
    require(bool(LOG_TARGET_RE.fullmatch(log_target)), f"invalid log target {log_target!r}")
    bind_line = f"bind {bind}"
    if policy.identity.source == "mtls":
        mtls = policy.identity.mtls
        assert mtls is not None
        require(
            mtls.server_cert is not None and mtls.ca_file is not None,
            "identity.mtls needs server_cert and ca_file for a full config",
        )
        assert mtls.server_cert is not None and mtls.ca_file is not None
        crt = resolved_file(policy, mtls.server_cert, "mTLS server certificate", check_files)
        ca = resolved_file(policy, mtls.ca_file, "mTLS CA file", check_files)
        bind_line += f" ssl crt {crt} ca-file {ca} verify required"

    glob = [
        "global",
        f"    log {log_target} local0",
        f"    stats socket {stats_socket} level admin"
        if stats_socket.startswith("ipv4@")
        else f"    stats socket {stats_socket} mode 600 level admin expose-fd listeners",
        "    # the Runtime API's prompt connections are closed after 10 s idle by default",
        "    stats timeout 1h",
        "    # pseudonym secret (base64) for hmac(sha256,...): keep this file mode 0600",
        f"    {hmac_line}",
        "    # no pattern-match LRU cache: every request brings a new pseudonym key, so the",
        "    # cache only adds a hash, a lock and an eviction to each of the ~20 string ACLs",
        "    # (measured: ~100 -> ~60 us of HAProxy CPU per request, bench/analysis.md)",
        "    tune.pattern.cache-size 0",
    ]
    if hard_stop_after is not None:
        require(hard_stop_after > 0, "hard_stop_after must be greater than 0")
        glob += [
            "    # an old worker keeps the maps it had: bound how long it serves after a reload",
            f"    hard-stop-after {max(1, round(hard_stop_after * 1000))}ms",
        ]
    if master_socket is not None:
        require(
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
    if kid_miss_table is not None:
        out += [
            "",
            "# kids of tokens that no held key has (read by scimgate, which then fetches the JWKS)",
            f"backend {JWT_KID_MISS_TABLE}",
            f"    {kid_miss_table}",
        ]
    if strict_seconds is not None:
        out += [
            "",
            "# strict mode: the node's agent refreshes key 1 while caught up (render_fleet)",
            f"backend {FLEET_HEARTBEAT_TABLE}",
            f"    {heartbeat_table(strict_seconds)}",
        ]
    for table, line in rate_limit_tables(policy).items():
        out += [
            "",
            "# per-identity request rates of one route (pseudonym keys)",
            f"backend {table}",
            f"    {line}",
        ]
    out += [
        "",
        "# live identity-gated streams (identity key|route|frontend|client ip:port), so a",
        "# deprovisioning can shut its tunnels (scimgate.policy.sessions); never shared with peers",
        f"backend {SESSIONS_TABLE}",
        f"    {sessions_table()}",
    ]
    if scim_frontend:
        out += ["", *scim_frontend]
    return "\n".join(out) + "\n"
