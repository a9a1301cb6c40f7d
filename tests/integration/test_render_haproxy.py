"""The rendered config against a real HAProxy: syntax, HMAC equality, JWT/header/mTLS rules.

Each HAProxy is started in tmp_path on a free 127.0.0.1 port (foreground, ``-db``) and
stopped by its PID. Kept self-contained (no shared fixture) so the policy tests only need
the binary.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scimgate.haproxy import RuntimeClient
from scimgate.policy import (
    OVERLAY_MAP_NAME,
    OVERLAY_TOMBSTONE,
    Policy,
    identity_key,
    map_file_names,
    parse_policy,
    render_config,
    shard_of,
)
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair, mint_jwt
from tests.support.haproxy import RunningHAProxy, launch
from tests.support.net import free_port
from tests.support.rendered import ADMINS, SECRET, SECRET_B64, write_maps

pytestmark = pytest.mark.haproxy

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
ISSUER = "https://idp.example.com/"
AUDIENCE = "scimgate-demo"

ALICE = {"userName": "Alice@Example.com", "active": True}  # active, no policy group
BOB = {"userName": "bob@example.com", "emails": [{"value": "Bob.Work@Example.com"}]}
CAROL = {"userName": "carol@example.com", "active": False}  # deprovisioned

API_ROUTE = """\
  - name: reports
    from: {hosts: ["*"], path_prefix: /reports}
    allow_groups: [any]
    require_scopes: ["read:reports"]
    to: {return: "reports"}
  - name: home
"""


def _check(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_rsa_keypair()
    other_priv, _ = generate_rsa_keypair()
    (d / "jwt.pub.pem").write_text(pub)
    return {
        "private": priv,
        "public": pub,
        "other": other_priv,
        "public_path": str(d / "jwt.pub.pem"),
    }


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., RunningHAProxy]]:
    running: list[RunningHAProxy] = []

    def _start(
        policy: Policy, *, shards: int = 1, users: list[Any] | None = None, **kw: Any
    ) -> RunningHAProxy:
        port = free_port()
        map_dir = tmp_path / "maps"
        write_maps(map_dir, policy, shards, users if users is not None else [])
        cfg_text = render_config(
            policy,
            map_dir=str(map_dir),
            shards=shards,
            hmac_secret_b64=SECRET_B64,
            bind=f"127.0.0.1:{port}",
            stats_socket=str(tmp_path / "admin.sock"),
            **kw,
        )
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(cfg_text)
        result = _check(cfg)
        assert result.returncode == 0, result.stdout + result.stderr
        hx = launch(cfg, ports=[port], stats_socket=tmp_path / "admin.sock")
        running.append(hx)
        return hx

    yield _start
    for hx in running:
        hx.stop()


def _jwt_policy(keys: dict[str, str], extra_routes: bool = True) -> Policy:
    text = demo_policy_yaml(public_key=keys["public_path"], issuer=ISSUER, audience=AUDIENCE)
    if extra_routes:
        text = text.replace("  - name: home\n", API_ROUTE)
    return parse_policy(text, "demo.yaml")


def _token(keys: dict[str, str], identity: str = "alice@example.com", **kw: Any) -> str:
    signing_key = kw.pop("key", keys["private"])
    args: dict[str, Any] = {
        "subject_claim": "email",
        "identity": identity,
        "algorithm": "RS256",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "ttl_seconds": 300,
        **kw,
    }
    return mint_jwt(signing_key, **args)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], hmac_secret: bytes | None) -> str:
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
    if hmac_secret is None:
        return signing_input + "."
    sig = hmac.new(hmac_secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(sig)}"


def _claims(identity: str = "mallory@example.com") -> dict[str, Any]:
    now = int(time.time())
    return {
        "email": identity,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


# --- syntax --------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 16, 256])
def test_full_config_passes_haproxy_check(
    tmp_path: Path, keys: dict[str, str], shards: int
) -> None:
    policy = _jwt_policy(keys)
    write_maps(tmp_path / "maps", policy, shards, [])
    cfg = tmp_path / "h.cfg"
    cfg.write_text(
        render_config(
            policy,
            map_dir=str(tmp_path / "maps"),
            shards=shards,
            hmac_secret_b64=SECRET_B64,
            stats_socket=str(tmp_path / "a.sock"),
            master_socket=str(tmp_path / "m.sock"),
            debug_headers=True,
        )
    )
    result = _check(cfg)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_fragment_passes_haproxy_check(tmp_path: Path, keys: dict[str, str]) -> None:
    text = demo_policy_yaml(public_key=keys["public_path"]).replace(
        'to: {return: "hello, active user"}', "to: {backend: be_app, servers: ['127.0.0.1:9']}"
    )
    policy = parse_policy(text, "p.yaml")
    write_maps(tmp_path / "maps", policy, 1, [])
    fragment = render_config(
        policy, mode="fragment", map_dir=str(tmp_path / "maps"), hmac_secret_b64=SECRET_B64
    )
    wrapped = (
        f"global\n    set-var proc.scimgate_hmac str({SECRET_B64})\n"
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n    timeout connect 5s\n"
        "frontend existing\n    bind 127.0.0.1:1\n"
        + "".join(f"    {line}\n" for line in fragment.splitlines())
        + "backend be_app\n    server s1 127.0.0.1:9\n"
        # the verified-token cache's backend, as the fragment's notes ask for it
        + "backend scimgate_jwt_cache\n    "
        + fragment.split("#     backend scimgate_jwt_cache\n#         ", 1)[1].split("\n", 1)[0]
        + "\n"
        # and the live-session table's backend, as the notes ask for it too
        + "backend scimgate_sessions\n    "
        + fragment.split("#     backend scimgate_sessions\n#         ", 1)[1].split("\n", 1)[0]
        + "\n"
    )
    cfg = tmp_path / "f.cfg"
    cfg.write_text(wrapped)
    result = _check(cfg)
    assert result.returncode == 0, result.stdout + result.stderr


# --- JWT source ----------------------------------------------------------------------------


def test_hmac_key_equals_python(start: Callable[..., RunningHAProxy], keys: dict[str, str]) -> None:
    policy = _jwt_policy(keys)
    hx = start(policy, users=[(ALICE, [])], debug_headers=True)
    for identity in ["alice@example.com", "Alice@EXAMPLE.com", "o'brien+Tag_1@sub.Example.org"]:
        status, headers, _ = hx.get("/", _bearer(_token(keys, identity)))
        assert headers["x-scimgate-key"] == identity_key(identity, SECRET)
        lowered = identity.encode().translate(bytes.maketrans(_UPPER, _UPPER.lower()))
        assert (
            headers["x-scimgate-key"]
            == hmac.new(SECRET, lowered, hashlib.sha256).hexdigest().upper()
        )
        assert status == (200 if identity.lower() == "alice@example.com" else 403)


def test_non_ascii_identity_is_refused(
    start: Callable[..., RunningHAProxy], keys: dict[str, str]
) -> None:
    # 2.6 decodes "\u00fc" to the Latin-1 byte 0xFC (a raw UTF-8 claim stays UTF-8): the key
    # would depend on the IdP's JSON encoder, so both sides refuse non-ASCII identities.
    hx = start(_jwt_policy(keys), users=[({"userName": "ünïcode@example.com"}, [])])
    assert identity_values_of("ünïcode@example.com", keys) == []
    status, _, _ = hx.get("/", _bearer(_token(keys, "ünïcode@example.com")))
    assert status == 401
    assert hx.get("/", _bearer(_token(keys, "with space@example.com")))[0] == 401


_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def identity_values_of(user_name: str, keys: dict[str, str]) -> list[str]:
    from scimgate.policy import identity_values

    return identity_values({"userName": user_name}, _jwt_policy(keys))


def test_jwt_enforcement(start: Callable[..., RunningHAProxy], keys: dict[str, str]) -> None:
    policy = _jwt_policy(keys)
    hx = start(policy, users=[(ALICE, []), (BOB, ADMINS), (CAROL, ADMINS)])
    alice = _bearer(_token(keys))
    bob = _bearer(_token(keys, "bob@example.com"))

    status, headers, body = hx.get("/", alice)
    assert (status, body) == (200, "hello, active user")
    assert headers["x-request-id"]
    assert "x-scimgate-key" not in headers
    assert hx.get("/admin", alice)[0] == 403
    assert hx.get("/admin/x", alice)[0] == 403
    assert hx.get("/administrator", alice)[0] == 200  # segment-aware prefix -> home route
    assert hx.get("/eng", alice)[0] == 403
    assert hx.get("/admin", bob)[:3:2] == (200, "admin area")
    assert hx.get("/admin", _bearer(_token(keys, "Bob.Work@example.com")))[0] == 200  # emails key
    assert hx.get("/eng", bob)[0] == 403

    # deprovisioned (inactive) and unknown users have no map entry
    assert hx.get("/", _bearer(_token(keys, "carol@example.com")))[0] == 403
    assert hx.get("/", _bearer(_token(keys, "nobody@example.com")))[0] == 403

    # the log line carries the pseudonym key, groups, route and decision, never the identity
    alice_key = identity_key("alice@example.com", SECRET)
    deadline = time.monotonic() + 3
    while alice_key not in hx.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = hx.log_text()
    assert f"key={alice_key} groups=, route=home decision=allow" in log
    assert f"key={alice_key} groups=, route=admin decision=group_denied" in log
    assert "route=home decision=unknown_identity" not in log
    assert "alice@example.com" not in log.lower()

    # ambiguous paths are refused before any route matches
    assert hx.get("/%61dmin", bob)[0] == 400
    assert hx.get("//admin", alice)[0] == 400
    assert hx.get("/x/../admin", alice)[0] == 400


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "not_bearer",
        "garbage",
        "alg_none",
        "hs256_public_pem",
        "hs256_key_path",
        "other_key",
        "expired",
        "no_exp",
        "nbf_future",
        "wrong_iss",
        "wrong_aud",
        "aud_array",
        "empty_identity",
        "tampered",
    ],
)
def test_jwt_rejections_are_401(
    start_shared: RunningHAProxy, keys: dict[str, str], case: str
) -> None:
    now = int(time.time())
    token: str | None
    if case == "missing":
        token = None
    elif case == "not_bearer":
        status, headers, _ = start_shared.get("/", [("Authorization", "Basic YWxpY2U6eA==")])
        assert status == 401
        return
    elif case == "garbage":
        token = "not.a.jwt"
    elif case == "alg_none":
        token = _forge({"alg": "none", "typ": "JWT"}, _claims("alice@example.com"), None)
    elif case == "hs256_public_pem":
        token = _forge(
            {"alg": "HS256", "typ": "JWT"}, _claims("alice@example.com"), keys["public"].encode()
        )
    elif case == "hs256_key_path":
        token = _forge(
            {"alg": "HS256", "typ": "JWT"},
            _claims("alice@example.com"),
            keys["public_path"].encode(),
        )
    elif case == "other_key":
        token = _token(keys, key=keys["other"])
    elif case == "expired":
        token = _token(keys, extra={"exp": now - 120, "nbf": now - 600})
    elif case == "no_exp":
        claims = _claims("alice@example.com")
        del claims["exp"]
        import jwt

        token = jwt.encode(claims, keys["private"], algorithm="RS256")
    elif case == "nbf_future":
        token = _token(keys, extra={"nbf": now + 600})
    elif case == "wrong_iss":
        token = _token(keys, issuer="https://evil.example.com/")
    elif case == "wrong_aud":
        token = _token(keys, audience="other-app")
    elif case == "aud_array":  # arrays are not readable by jwt_payload_query on 2.6: fail closed
        token = _token(keys, extra={"aud": [AUDIENCE, "x"]})
    elif case == "empty_identity":
        token = _token(keys, identity="")
    else:
        good = _token(keys)
        head, _payload, sig = good.split(".")
        token = f"{head}.{_b64url(json.dumps(_claims('bob@example.com')).encode())}.{sig}"
    status, headers, body = start_shared.get("/admin", _bearer(token) if token else [])
    assert status == 401, (case, body)
    assert headers["www-authenticate"] == 'Bearer realm="scimgate"'
    assert json.loads(body)["status"] == 401


@pytest.fixture
def start_shared(start: Callable[..., RunningHAProxy], keys: dict[str, str]) -> RunningHAProxy:
    return start(_jwt_policy(keys), users=[(ALICE, []), (BOB, ADMINS)])


def test_leeway_accepts_recent_expiry(start_shared: RunningHAProxy, keys: dict[str, str]) -> None:
    now = int(time.time())
    assert start_shared.get("/", _bearer(_token(keys, extra={"exp": now - 5})))[0] == 200
    assert start_shared.get("/", _bearer(_token(keys, extra={"nbf": now + 10})))[0] == 200


def test_scopes(start_shared: RunningHAProxy, keys: dict[str, str]) -> None:
    hx = start_shared
    assert hx.get("/reports", _bearer(_token(keys)))[0] == 403
    assert hx.get("/reports", _bearer(_token(keys, scopes=["openid", "read:reports"])))[0] == 200
    assert hx.get("/reports", _bearer(_token(keys, scopes=["read:reports"])))[0] == 200
    # no prefix/suffix confusion: whole space-separated words only
    assert hx.get("/reports", _bearer(_token(keys, scopes=["read:reports-all"])))[0] == 403
    assert hx.get("/reports", _bearer(_token(keys, scopes=["xread:reports"])))[0] == 403


def test_sharded_layout(
    start: Callable[..., RunningHAProxy], keys: dict[str, str], tmp_path: Path
) -> None:
    policy = _jwt_policy(keys)
    hx = start(policy, shards=16, users=[(ALICE, []), (BOB, ADMINS)])
    assert hx.get("/", _bearer(_token(keys)))[0] == 200
    assert hx.get("/admin", _bearer(_token(keys, "bob@example.com")))[0] == 200
    # an entry in the wrong shard is not found
    key = identity_key("alice@example.com", SECRET)
    right = map_file_names(16)[shard_of(key, 16)]
    wrong = map_file_names(16)[(shard_of(key, 16) + 1) % 16]
    assert (tmp_path / "maps" / right).read_text().startswith(key)
    hx.stop()
    (tmp_path / "maps" / wrong).write_text((tmp_path / "maps" / right).read_text())
    (tmp_path / "maps" / right).write_text("")
    hx2 = launch(tmp_path / "haproxy.cfg", ports=[hx.port], stats_socket=tmp_path / "admin.sock")
    try:
        assert hx2.get("/", _bearer(_token(keys)))[0] == 403
    finally:
        hx2.stop()


@pytest.mark.parametrize("shards", [1, 16])
def test_overlay_entry_wins_over_the_shard(
    start: Callable[..., RunningHAProxy], keys: dict[str, str], tmp_path: Path, shards: int
) -> None:
    """The engine's fast path, as HAProxy sees it: an overlay entry overrides the shard's
    (a tombstone denies a user the shard still allows; a new value grants at once)."""
    policy = _jwt_policy(keys)
    hx = start(policy, shards=shards, users=[(ALICE, []), (BOB, ADMINS)])
    alice, bob = _token(keys), _token(keys, "bob@example.com")
    assert hx.get("/", _bearer(alice))[0] == 200 and hx.get("/admin", _bearer(bob))[0] == 200
    overlay = str(tmp_path / "maps" / OVERLAY_MAP_NAME)
    alice_key = identity_key("alice@example.com", SECRET)
    bob_key = identity_key("bob@example.com", SECRET)
    with RuntimeClient(f"unix:{tmp_path / 'admin.sock'}", 5.0) as client:
        client.add_map(overlay, alice_key, OVERLAY_TOMBSTONE)
        assert hx.get("/", _bearer(alice))[0] == 403  # deprovisioned: unknown identity
        client.add_map(overlay, bob_key, ",")
        assert hx.get("/admin", _bearer(bob))[0] == 403  # lost the group
        assert hx.get("/", _bearer(bob))[0] == 200
        client.set_map(overlay, alice_key, ",admins,")
        assert hx.get("/admin", _bearer(alice))[0] == 200
        client.del_map(overlay, alice_key)
        client.del_map(overlay, bob_key)
    assert hx.get("/admin", _bearer(alice))[0] == 403 and hx.get("/admin", _bearer(bob))[0] == 200


# --- header source -------------------------------------------------------------------------


def _header_policy(trusted: str) -> Policy:
    text = demo_policy_yaml().replace(
        "  source: jwt\n",
        f"  source: header\n  header: {{name: X-Forwarded-Email, trusted_sources: [{trusted}]}}\n",
    )
    return parse_policy(text, "h.yaml")


def test_header_source(start: Callable[..., RunningHAProxy]) -> None:
    hx = start(_header_policy("127.0.0.1/32"), users=[(ALICE, []), (BOB, ADMINS)])
    assert hx.get("/", [("X-Forwarded-Email", "alice@example.com")])[0] == 200
    assert hx.get("/admin", [("X-Forwarded-Email", "ALICE@example.com")])[0] == 403
    assert hx.get("/admin", [("X-Forwarded-Email", "bob@example.com")])[0] == 200
    assert hx.get("/", [])[0] == 401
    # duplicates and comma lists are refused (req.hdr would split and match any value)
    dup = [("X-Forwarded-Email", "alice@example.com"), ("X-Forwarded-Email", "bob@example.com")]
    assert hx.get("/admin", dup)[0] == 401
    assert hx.get("/admin", [("X-Forwarded-Email", "alice@example.com,bob@example.com")])[0] == 401
    assert hx.get("/admin", [("X-Forwarded-Email", "bob@example.com,alice@example.com")])[0] == 401
    # no WWW-Authenticate: Bearer for a header source
    assert "www-authenticate" not in hx.get("/", [])[1]


def test_header_from_untrusted_source_is_ignored(start: Callable[..., RunningHAProxy]) -> None:
    hx = start(_header_policy("10.9.9.9/32"), users=[(ALICE, []), (BOB, ADMINS)])
    assert hx.get("/admin", [("X-Forwarded-Email", "bob@example.com")])[0] == 401


# --- mTLS source (syntax only) -------------------------------------------------------------


def test_mtls_config_passes_haproxy_check(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scimgate test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    (tmp_path / "server.pem").write_text(cert_pem + key_pem)
    (tmp_path / "ca.pem").write_text(cert_pem)
    for field in ("subject_cn", "subject_email"):
        text = demo_policy_yaml().replace(
            "  source: jwt\n",
            f"  source: mtls\n  mtls: {{field: {field}, server_cert: server.pem, ca_file: ca.pem}}\n",
        )
        policy = parse_policy(text, "m.yaml", base_dir=str(tmp_path))
        write_maps(tmp_path / "maps", policy, 1, [])
        cfg = tmp_path / "m.cfg"
        cfg.write_text(
            render_config(
                policy,
                map_dir=str(tmp_path / "maps"),
                hmac_secret_b64=SECRET_B64,
                stats_socket=str(tmp_path / "s.sock"),
            )
        )
        result = _check(cfg)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ssl_c_s_dn(" in cfg.read_text()
