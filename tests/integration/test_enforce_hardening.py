"""Issue 8 (hardening) against a real HAProxy running the rendered config: canonical request
targets before routes match, JWT claim types, one credential per request, identity headers
for backends (client copies removed), public and source-limited routes.

Requests are written byte for byte on raw loopback sockets (so ``/admin\\``, ``%00`` and
absolute-form targets reach HAProxy as sent); the backend is a tiny HTTP server on
127.0.0.1 that echoes the request headers it received. The source-limited route is probed
from 127.0.0.1 and 127.0.0.2. Each HAProxy is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from scimgate.policy import Policy, parse_policy, render_config
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair, mint_jwt
from tests.support.haproxy import BearerGate, assert_config_valid, launch_gate
from tests.support.net import free_port
from tests.support.rawhttp import send
from tests.support.rendered import ADMINS, SECRET_B64, write_maps

pytestmark = pytest.mark.haproxy

ISSUER = "https://idp.example.com/"
AUDIENCE = "scimgate-demo"
HOME = "hello, active user"
ALICE = {"userName": "alice@example.com"}  # active, no policy group
BOB = {"userName": "bob@example.com"}  # admin
IDENTITY_HEADERS = ("x-scimgate-user", "x-scimgate-email", "x-scimgate-actor", "x-scimgate-groups")

EXTRA_ROUTES = """\
  - name: status
    from: {{path_prefix: /status}}
    public: true
    to: {{backend: be_echo, servers: ["127.0.0.1:{port}"]}}
  - name: metrics
    from: {{path_prefix: /metrics}}
    allow_sources: [127.0.0.1/32]
    to: {{backend: be_echo, servers: ["127.0.0.1:{port}"]}}
  - name: api
    from: {{path_prefix: /api}}
    allow_groups: [any]
    to: {{backend: be_echo, servers: ["127.0.0.1:{port}"]}}
  - name: docs
    from: {{path_prefix: /Docs, case_sensitive: true}}
    allow_groups: [admins]
    to: {{return: "docs"}}
  - name: console
    from: {{hosts: [admin.example.com], path_prefix: /console}}
    allow_groups: [admins]
    to: {{return: "admin console"}}
"""


# --- harness -------------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps(
            {"request_line": self.requestline, "headers": [[k, v] for k, v in self.headers.items()]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle(self) -> None:
        # HAProxy closes idle keep-alive server connections: not an error here
        with contextlib.suppress(ConnectionResetError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    """A real HTTP backend on loopback that answers with the headers it received."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_rsa_keypair()
    (d / "jwt.pub.pem").write_text(pub)
    return {"private": priv, "path": str(d / "jwt.pub.pem")}


def _start(directory: Path, policy: Policy, users: list[Any]) -> BearerGate:
    port = free_port()
    write_maps(directory / "maps", policy, 1, users)
    cfg = directory / "haproxy.cfg"
    cfg.write_text(
        render_config(
            policy,
            map_dir=str(directory / "maps"),
            hmac_secret_b64=SECRET_B64,
            bind=f"127.0.0.1:{port}",
            stats_socket=str(directory / "admin.sock"),
            debug_headers=True,
        )
    )
    assert_config_valid(cfg)
    return launch_gate(cfg, port, directory / "admin.sock")


@pytest.fixture(scope="module")
def hx(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, str], echo: int
) -> Iterator[BearerGate]:
    text = demo_policy_yaml(public_key=keys["path"], issuer=ISSUER, audience=AUDIENCE)
    # the claim checks with the token cut-off off (its default; the demo turns it on, and it
    # refuses a token without iat: tests/e2e/test_enforcement_e2e.py)
    text = text.replace("    cutoff: true", "    cutoff: false", 1)
    text = text.replace("routes:\n", "routes:\n" + EXTRA_ROUTES.format(port=echo), 1)
    proxy = _start(
        tmp_path_factory.mktemp("hardening"),
        parse_policy(text, "hardening.yaml"),
        [(ALICE, []), (BOB, ADMINS)],
    )
    yield proxy
    proxy.stop()


def _claims(identity: str = "alice@example.com") -> dict[str, Any]:
    now = int(time.time())
    return {"email": identity, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now,
            "exp": now + 300}  # fmt: skip


def _signed(keys: dict[str, str], payload: str) -> str:
    """An RS256 token over exactly this payload text (types the JSON encoder would not make)."""
    return jwt.api_jws.encode(payload.encode(), keys["private"], algorithm="RS256")


def _token(keys: dict[str, str], identity: str = "alice@example.com", **extra: Any) -> str:
    return mint_jwt(keys["private"], subject_claim="email", identity=identity, algorithm="RS256",
                    issuer=ISSUER, audience=AUDIENCE, extra=extra or None)  # fmt: skip


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


# --- paths: the issue's probes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status"),
    [("/ADMIN", 403), ("/admin;x", 400), ("/admin%3b", 400), ("/admin%00", 400),
     ("/admin%20", 400), ("/admin\\", 400), ("/admin.", 400)],
)  # fmt: skip
def test_issue_path_probes_never_reach_home(
    hx: BearerGate, keys: dict[str, str], target: str, status: int
) -> None:
    reply = send(hx.port, target, _bearer(_token(keys)))
    assert reply.status == status, (target, reply)
    assert HOME not in reply.body
    assert reply.headers.get("x-scimgate-route") != "home"
    if status == 403:  # /ADMIN is the admin route itself (case-insensitive), denied there
        assert reply.headers["x-scimgate-route"] == "admin"
        assert reply.headers["x-scimgate-decision"] == "group_denied"
        assert send(hx.port, target, _bearer(_token(keys, "bob@example.com"))).body == "admin area"
    else:
        assert reply.headers["x-scimgate-decision"] == "ambiguous_path"


@pytest.mark.parametrize(
    ("target", "status", "route"),
    [
        ("/admin.json", 403, "admin"),  # format suffix: the admin handler on Rails-like servers
        ("/Admin/x", 403, "admin"),
        ("/administrator", 200, "home"),  # another segment
        ("/admin%2f", 400, None),
        ("/admin%5C", 400, None),
        ("/admin%09", 400, None),
        ("/adm%C4%B1n", 400, None),  # dotless i: 'ADMIN' to Java's equalsIgnoreCase
        ("/a%20/admin", 400, None),
        ("/a./admin", 400, None),
        ("/admin%3F", 400, None),
        ("/admin%23", 400, None),
        ("/x/..%2fadmin", 400, None),
        ("/files/My%20Doc.pdf", 200, "home"),
        ("/x?q=;%00\\", 200, "home"),  # the query is not the path
        ("http://app.example.com/admin?q", 403, "admin"),  # absolute-form: path is /admin
        ("*", 400, None),
        ("http://app.example.com", 400, None),  # no path
    ],
)
def test_request_targets(
    hx: BearerGate, keys: dict[str, str], target: str, status: int, route: str | None
) -> None:
    reply = send(hx.port, target, _bearer(_token(keys)))
    assert reply.status == status, (target, reply)
    assert reply.headers.get("x-scimgate-route") == route or route is None
    if status == 400:
        assert json.loads(reply.body) == {"error": "ambiguous request", "status": 400}


def test_hosts_and_connection_tokens(hx: BearerGate, keys: dict[str, str]) -> None:
    alice, bob = _bearer(_token(keys)), _bearer(_token(keys, "bob@example.com"))
    # absolute-form without a Host header: HAProxy would pass it with an empty Host
    assert send(hx.port, "http://admin.example.com/console", alice, host=None).status == 400
    # one Host header holding two names
    two = "admin.example.com, app.example.com"
    assert send(hx.port, "/console", alice, host=two).status == 400
    # an origin-form HTTP/1.0 health check without Host is left alone
    reply = send(hx.port, "/healthz", host=None, version="HTTP/1.0")
    assert (reply.status, reply.body) == (200, "ok")
    # host names match case-insensitively, with or without the root '.', port ignored
    for host in ("ADMIN.Example.COM.", "admin.example.com:8443", "admin.example.com"):
        reply = send(hx.port, "/console", alice, host=host)
        assert (reply.status, reply.headers["x-scimgate-route"]) == (403, "console"), host
        assert send(hx.port, "/CONSOLE", bob, host=host).body == "admin console"
    # a Connection header naming an identity header (hop-by-hop removal behind us)
    for value in ("close, X-Scimgate-User", "x_scimgate_groups", "X-Request-ID"):
        reply = send(hx.port, "/api", [*alice, ("Connection", value)])
        assert reply.status == 400, value
        assert reply.headers["x-scimgate-decision"] == "hop_by_hop_identity"


def test_case_sensitive_route(hx: BearerGate, keys: dict[str, str]) -> None:
    alice, bob = _bearer(_token(keys)), _bearer(_token(keys, "bob@example.com"))
    assert send(hx.port, "/Docs", alice).status == 403
    assert send(hx.port, "/Docs/x", bob).body == "docs"
    # the route said case_sensitive: /docs is not it
    reply = send(hx.port, "/docs", alice)
    assert (reply.status, reply.body) == (200, HOME)


# --- JWT claims -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "exp_string", "exp_20_digits", "exp_float", "exp_exponent", "exp_bool", "exp_null",
        "exp_leading_zero", "exp_11_digits", "exp_negative", "exp_duplicate_string",
        "nbf_true", "nbf_array", "nbf_object", "nbf_text", "nbf_null", "iat_text", "iat_float",
        "identity_newline", "identity_trailing_space", "identity_tab", "identity_number",
        "identity_true", "identity_null", "identity_array",
    ],
)  # fmt: skip
def test_malformed_claims_are_401_and_never_cached(
    hx: BearerGate, keys: dict[str, str], case: str
) -> None:
    now = int(time.time())
    claims = _claims()
    raw: dict[str, str] = {k: json.dumps(v) for k, v in claims.items()}
    claim, _, kind = case.partition("_")
    key = "email" if claim == "identity" else claim
    raw[key] = {
        "string": json.dumps(str(now + 300)),
        "20_digits": "17000000000000000000",
        "float": f"{now + 300}.5",
        "exponent": f"{now + 300}e0",
        "bool": "true",
        "null": "null",
        "leading_zero": f"0{now + 300}",
        "11_digits": f"{now + 300}0",
        "negative": "-1",
        "true": "true",
        "array": "[]" if claim == "nbf" else '["alice@example.com"]',
        "object": "{}",
        "text": '"text"',
        "newline": json.dumps("alice@example.com\n"),
        "trailing_space": json.dumps("alice@example.com "),
        "tab": json.dumps("alice@\texample.com"),
        "number": "5",
    }.get(kind, raw[key])
    payload = "{" + ",".join(f'"{k}":{v}' for k, v in raw.items())
    if kind == "duplicate_string":  # the second exp is a string
        payload += f',"exp":"{now + 300}"'
    token = _signed(keys, payload + "}")
    for _ in range(2):  # a second try finds no cache entry either
        reply = send(hx.port, "/", _bearer(token))
        assert reply.status == 401, (case, reply)
        assert reply.headers["www-authenticate"] == 'Bearer realm="scimgate"'
    assert hashlib.sha256(token.encode()).hexdigest().upper() not in hx.table()


@pytest.mark.parametrize(
    "payload",
    [
        # nbf and iat may be absent; JSON whitespace anywhere is fine
        '{{"email":"alice@example.com","iss":"{iss}","aud":"{aud}","exp":{exp}}}',
        '{{ "email" : "alice@example.com" , "iss":"{iss}","aud":"{aud}",\n "exp" :\t{exp} ,'
        '"nbf": {now} ,"iat" : {now} }}',
    ],
)
def test_well_formed_claims_pass_and_are_cached(
    hx: BearerGate, keys: dict[str, str], payload: str
) -> None:
    now = int(time.time())
    token = _signed(keys, payload.format(iss=ISSUER, aud=AUDIENCE, exp=now + 300, now=now))
    first = send(hx.port, "/", _bearer(token))
    assert (first.status, first.body) == (200, HOME)
    assert first.headers["x-scimgate-jwt-verified"] == "1"
    entry = hx.table()[hashlib.sha256(token.encode()).hexdigest().upper()]
    assert int(entry["gpt0"]) == now + 300  # the cached exp is the verified one
    assert send(hx.port, "/", _bearer(token)).headers["x-scimgate-jwt-cached"] == "1"


def test_one_credential_per_request(hx: BearerGate, keys: dict[str, str]) -> None:
    alice, bob = _token(keys), _token(keys, "bob@example.com")
    assert send(hx.port, "/admin", _bearer(bob)).status == 200
    for headers in (
        [("Authorization", f"Bearer {alice}"), ("Authorization", f"Bearer {bob}")],
        [("Authorization", f"Bearer {bob}"), ("Authorization", f"Bearer {alice}")],
        [("Authorization", f"Bearer {bob}, Bearer {alice}")],
        [("Authorization", f"Bearer {bob}"), ("Authorization", "Basic YTpi")],
    ):
        reply = send(hx.port, "/admin", headers)
        assert reply.status == 401, headers
        assert reply.headers["x-scimgate-decision"] == "ambiguous_credentials"


# --- what passes the proxy ------------------------------------------------------------------

SPOOFED = [
    ("X-Scimgate-User", "bob@example.com"),
    ("x_scimgate_user", "mallory@example.com"),
    ("X-SCIMGATE-GROUPS", ",admins,"),
    ("X_Scimgate_Email", "bob@example.com"),
    ("X-Scimgate-Actor", "root"),
    ("X-Request-ID", "forged-request-id"),
    ("X-Original-URL", "/admin"),
    ("x_rewrite_url", "/admin"),
]


def _no_spoofed_copies(seen: dict[str, list[str]]) -> None:
    assert not [name for name in seen if "_" in name], seen  # underscore variants removed
    assert "x-original-url" not in seen and "x-rewrite-url" not in seen, seen
    assert "forged-request-id" not in seen.get("x-request-id", []), seen
    for values in seen.values():
        assert "mallory@example.com" not in values and "root" not in values, seen


def test_identity_headers_reach_the_backend_and_spoofed_copies_do_not(
    hx: BearerGate, keys: dict[str, str]
) -> None:
    reply = send(hx.port, "/api/items", [*_bearer(_token(keys)), *SPOOFED])
    assert reply.status == 200, reply
    seen = reply.echoed()
    _no_spoofed_copies(seen)
    assert seen["x-scimgate-user"] == ["alice@example.com"]
    assert seen["x-scimgate-email"] == ["alice@example.com"]
    assert seen["x-scimgate-groups"] == [""]  # active, in no policy group
    assert "x-scimgate-actor" not in seen
    # the request id the backend saw is the one the client gets back
    assert seen["x-request-id"] == [reply.headers["x-request-id"]]

    bob = _token(keys, "Bob@Example.com", act={"sub": "agent-7", "act": {"sub": "orchestrator"}})
    seen = send(hx.port, "/api", [*_bearer(bob), *SPOOFED]).echoed()
    _no_spoofed_copies(seen)
    assert seen["x-scimgate-user"] == ["Bob@Example.com"]  # as presented
    assert seen["x-scimgate-groups"] == ["admins"]
    assert seen["x-scimgate-actor"] == ["agent-7"]  # RFC 8693 act.sub


@pytest.mark.parametrize("act", [{"sub": "agent 7"}, {"sub": ""}, {"sub": 7}, "agent-7", {}])
def test_a_malformed_actor_is_refused(hx: BearerGate, keys: dict[str, str], act: Any) -> None:
    reply = send(hx.port, "/api", _bearer(_token(keys, act=act)))
    assert reply.status == 401, (act, reply)


def test_public_routes_need_no_token_and_get_no_identity(
    hx: BearerGate, keys: dict[str, str]
) -> None:
    reply = send(hx.port, "/healthz")
    assert (reply.status, reply.body, reply.headers["x-scimgate-decision"]) == (200, "ok", "allow")
    assert send(hx.port, "/HEALTHZ/live").body == "ok"
    for headers in ([], _bearer(_token(keys, "bob@example.com"))):
        reply = send(hx.port, "/status", [*headers, *SPOOFED])
        assert reply.status == 200, reply
        seen = reply.echoed()
        _no_spoofed_copies(seen)
        assert not set(IDENTITY_HEADERS) & seen.keys(), seen
        assert seen["x-request-id"] == [reply.headers["x-request-id"]]
    # path rules apply to public routes too
    assert send(hx.port, "/status;x").status == 400


def test_source_limited_route(hx: BearerGate, keys: dict[str, str]) -> None:
    reply = send(hx.port, "/metrics", SPOOFED, source="127.0.0.1")
    assert reply.status == 200, reply
    seen = reply.echoed()
    _no_spoofed_copies(seen)
    assert not set(IDENTITY_HEADERS) & seen.keys(), seen
    # from another source: refused, whoever the caller is
    for headers in ([], _bearer(_token(keys, "bob@example.com"))):
        reply = send(hx.port, "/metrics", headers, source="127.0.0.2")
        assert reply.status == 403
        assert reply.headers["x-scimgate-decision"] == "source_denied"
    # identity-gated routes still work from there
    assert send(hx.port, "/", _bearer(_token(keys)), source="127.0.0.2").body == HOME


def test_header_source_copies_are_removed(tmp_path: Path, keys: dict[str, str], echo: int) -> None:
    text = demo_policy_yaml().replace(
        "  source: jwt\n",
        "  source: header\n  header: {name: X-Forwarded-Email, trusted_sources: [127.0.0.1/32]}\n",
    )
    text = text.replace("routes:\n", "routes:\n" + EXTRA_ROUTES.format(port=echo), 1)
    proxy = _start(tmp_path, parse_policy(text, "h.yaml"), [(ALICE, []), (BOB, ADMINS)])
    try:
        spoof = [("X-Forwarded-Email", "bob@example.com"), ("X_Forwarded_Email", "bob@x")]
        # untrusted source: no identity, and no copy reaches any backend
        assert send(proxy.port, "/api", spoof, source="127.0.0.2").status == 401
        seen = send(proxy.port, "/status", spoof, source="127.0.0.2").echoed()
        assert "x-forwarded-email" not in seen and "x_forwarded_email" not in seen, seen
        # trusted front: the identity is used; open routes still get none of it
        trusted = [("X-Forwarded-Email", "alice@example.com")]
        seen = send(proxy.port, "/api", trusted).echoed()
        assert seen["x-scimgate-user"] == ["alice@example.com"]
        assert "x-scimgate-email" not in seen  # a header identity says nothing of an e-mail
        seen = send(proxy.port, "/status", trusted).echoed()
        assert "x-forwarded-email" not in seen and not set(IDENTITY_HEADERS) & seen.keys()
    finally:
        proxy.stop()


def test_identity_header_names_are_configurable(
    tmp_path: Path, keys: dict[str, str], echo: int
) -> None:
    text = demo_policy_yaml(public_key=keys["path"], issuer=ISSUER, audience=AUDIENCE)
    # the claim checks with the token cut-off off (its default; the demo turns it on, and it
    # refuses a token without iat: tests/e2e/test_enforcement_e2e.py)
    text = text.replace("    cutoff: true", "    cutoff: false", 1)
    text = text.replace("routes:\n", "routes:\n" + EXTRA_ROUTES.format(port=echo), 1)
    text += "identity_headers: {user: X-Forwarded-User, groups: X-Forwarded-Groups, email: null}\n"
    proxy = _start(tmp_path, parse_policy(text, "c.yaml"), [(ALICE, []), (BOB, ADMINS)])
    try:
        spoof = [("X-Forwarded-User", "mallory@example.com"), ("X-Scimgate-Email", "x@y")]
        seen = send(proxy.port, "/api", [*_bearer(_token(keys, "bob@example.com")), *spoof])
        headers = seen.echoed()
        assert headers["x-forwarded-user"] == ["bob@example.com"]
        assert headers["x-forwarded-groups"] == ["admins"]
        # email is off: its default name is no longer ours, so a client's copy passes as data
        assert "x-scimgate-user" not in headers
    finally:
        proxy.stop()
