"""The verified-token cache against a real HAProxy 2.6: only verified tokens enter it, a hit
skips only the signature check, and every claim check still runs on every request.

Each HAProxy runs in tmp_path on a free 127.0.0.1 port (``tests.support.haproxy.launch``),
with its stats socket in tmp_path (read with ``show table``), and is stopped by its PID.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scimgate.policy import (
    OVERLAY_MAP_NAME,
    Policy,
    PolicyError,
    entries_for_user,
    map_file_names,
    parse_policy,
    render_config,
)
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair, mint_jwt
from scimgate.policy.sessions import SESSIONS_TABLE
from tests.support.haproxy import BearerGate, assert_config_valid, launch_gate
from tests.support.net import free_port
from tests.support.rendered import SECRET, SECRET_B64

ISSUER = "https://idp.example.com/"
AUDIENCE = "scimgate-demo"
TABLE = "scimgate_jwt_cache"
USERS = [{"userName": "alice@example.com"}, {"userName": "bob@example.com"}]

haproxy = pytest.mark.haproxy


# --- harness -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("keys")
    priv, pub = generate_rsa_keypair()
    other_priv, _ = generate_rsa_keypair()
    (d / "jwt.pub.pem").write_text(pub)
    return {"private": priv, "public": pub, "other": other_priv, "path": str(d / "jwt.pub.pem")}


def _policy(keys: dict[str, str], cache: str | None = None, leeway: int = 30) -> Policy:
    text = demo_policy_yaml(public_key=keys["path"], issuer=ISSUER, audience=AUDIENCE)
    extra = f"    leeway_seconds: {leeway}\n"
    if cache is not None:
        extra += f"    verified_cache: {cache}\n"
    return parse_policy(text.replace("    leeway_seconds: 30\n", extra), "p.yaml")


def _write_map(map_dir: Path, policy: Policy) -> None:
    map_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{k} {v}\n"
        for user in USERS
        for k, v in entries_for_user(user, [], policy, SECRET).items()
    ]
    (map_dir / map_file_names(1)[0]).write_text("".join(lines))
    (map_dir / OVERLAY_MAP_NAME).write_text("")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., BearerGate]]:
    running: list[BearerGate] = []

    def _start(policy: Policy) -> BearerGate:
        port, sock = free_port(), tmp_path / f"admin-{len(running)}.sock"
        _write_map(tmp_path / "maps", policy)
        cfg = tmp_path / f"haproxy-{len(running)}.cfg"
        cfg.write_text(
            render_config(
                policy,
                map_dir=str(tmp_path / "maps"),
                hmac_secret_b64=SECRET_B64,
                bind=f"127.0.0.1:{port}",
                stats_socket=str(sock),
                debug_headers=True,  # X-Scimgate-Jwt-Cached / -Verified: the proof of a hit
            )
        )
        assert_config_valid(cfg)
        hx = launch_gate(cfg, port, sock)
        running.append(hx)
        return hx

    yield _start
    for hx in running:
        hx.stop()


def _token(keys: dict[str, str], identity: str = "alice@example.com", **kw: Any) -> str:
    args: dict[str, Any] = {"algorithm": "RS256", "issuer": ISSUER, "audience": AUDIENCE, **kw}
    return mint_jwt(
        kw.pop("key", keys["private"]),
        subject_claim="email",
        identity=identity,
        **{k: v for k, v in args.items() if k != "key"},
    )


def _exp(token: str) -> int:
    payload = token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest().upper()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forgeries(keys: dict[str, str], valid: str) -> dict[str, str]:
    """Tokens that must all be refused, built around the cached ``valid`` token."""
    head, payload, sig = valid.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))

    def hs256(secret: bytes, claims_: dict[str, Any]) -> str:
        h = _b64url(json.dumps({**header, "alg": "HS256"}).encode())
        body = f"{h}.{_b64url(json.dumps(claims_).encode())}"
        return f"{body}.{_b64url(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"

    other_sig = _token(keys, key=keys["other"]).split(".")[2]
    bob_claims = {**claims, "email": "bob@example.com"}
    return {
        # same header and payload bytes, another signature
        "other_key_signature": f"{head}.{payload}.{other_sig}",
        "random_signature": f"{head}.{payload}.{_b64url(os.urandom(256))}",
        "no_signature": f"{head}.{payload}.",
        # the valid signature on another payload
        "spliced_payload": f"{head}.{_b64url(json.dumps(bob_claims).encode())}.{sig}",
        "alg_none": f"{_b64url(json.dumps({'alg': 'none'}).encode())}.{payload}.",
        "hs256_public_pem": hs256(keys["public"].encode(), claims),
        "hs256_key_path": hs256(keys["path"].encode(), claims),
        "signed_by_other_key": _token(keys, key=keys["other"]),
    }


# --- policy model (no HAProxy) -------------------------------------------------------------


def test_cache_is_on_by_default(keys: dict[str, str]) -> None:
    cache = _policy(keys).identity.jwt.verified_cache  # type: ignore[union-attr]
    assert (cache.enabled, cache.ttl_seconds, cache.size) == (True, 300, 1_000_000)


@pytest.mark.parametrize(
    "value",
    [
        "{ttl_seconds: 0}",
        "{ttl_seconds: 3601}",
        "{ttl_seconds: '300'}",
        "{ttl_seconds: 1.5}",
        "{size: 0}",
        "{size: 10000001}",
        "{enabled: 'yes'}",
        "{enabled: 1}",
        "{ttl: 300}",
        "{ttl_seconds: 300s}",
        "true",
    ],
)
def test_cache_settings_are_validated(keys: dict[str, str], value: str) -> None:
    with pytest.raises(PolicyError, match="verified_cache"):
        _policy(keys, cache=value)


def test_disabled_cache_renders_the_old_rules(keys: dict[str, str]) -> None:
    off = render_config(_policy(keys, "{enabled: false}"), map_dir="/m", hmac_secret_b64=SECRET_B64)
    on = render_config(_policy(keys), map_dir="/m", hmac_secret_b64=SECRET_B64)
    # (track-sc1 and a string stick-table are the live-session table's, in both configs)
    for text in (
        "scimgate_jwt_cache",
        "sha2(256)",
        "track-sc2",
        "sc-set-gpt0",
        "stick-table type binary",
    ):
        assert text not in off
        assert text in on
    assert (
        "var(txn.scimgate_jwt_identity) if scimgate_jwt_alg_ok scimgate_jwt_payload_ok "
        "!scimgate_jwt_claim_types_bad scimgate_jwt_exp_sane scimgate_jwt_exp_ok "
        "!scimgate_jwt_nbf_bad scimgate_jwt_iss_ok scimgate_jwt_aud_ok scimgate_jwt_identity_ok "
        "scimgate_jwt_sig_ok\n"
    ) in off
    # the only difference is the cache: its lines, its backend, the identity line's condition
    # and the claim decodes skipped on a hit; without those, both configs are the same
    cache_words = ("scimgate_jwt_digest", "scimgate_jwt_cached", "scimgate_jwt_verified",
                   "scimgate_jwt_store", "scimgate_jwt_cache", "set-var(txn.scimgate_identity)")  # fmt: skip

    def core(text: str) -> list[str]:
        lines = [line.replace(" if !scimgate_jwt_cached", "") for line in text.splitlines()]
        return [
            line
            for line in lines
            if line.strip()
            and not line.lstrip().startswith("#")
            and not any(w in line for w in cache_words)
            and "stick-table" not in line
        ]

    assert core(on) == core(off)
    for claim in ("alg", "exp", "nbf", "iss", "aud"):
        decode = next(
            line for line in on.splitlines() if f"set-var(txn.scimgate_jwt_{claim})" in line
        )
        assert decode.endswith(" if !scimgate_jwt_cached"), decode
    assert off.count("jwt_verify(") == on.count("jwt_verify(") == 1


def test_cache_settings_render(keys: dict[str, str]) -> None:
    cfg = render_config(
        _policy(keys, "{ttl_seconds: 60, size: 5000}"), map_dir="/m", hmac_secret_b64=SECRET_B64
    )
    assert (
        f"backend {TABLE}\n    stick-table type binary len 32 size 5000 expire 60s store gpt0\n"
        in cfg
    )
    frag = render_config(_policy(keys), mode="fragment", map_dir="/m", hmac_secret_b64=SECRET_B64)
    assert f"#     backend {TABLE}\n#         stick-table type binary len 32 size 1000000" in frag
    assert "no other track-sc2" in frag
    assert "\nbackend" not in frag


# --- against HAProxy -----------------------------------------------------------------------


@haproxy
def test_valid_token_is_verified_once_then_served_from_cache(
    start: Callable[..., BearerGate], keys: dict[str, str]
) -> None:
    hx = start(_policy(keys))
    token = _token(keys)
    assert hx.table() == {}

    status, h = hx.get(token)
    assert status == 200
    assert (h["x-scimgate-jwt-cached"], h["x-scimgate-jwt-verified"]) == ("", "1")  # verified
    table = hx.table()
    assert list(table) == [_digest(token)]  # SHA-256 of the whole token, as the key
    assert table[_digest(token)]["gpt0"] == str(_exp(token))  # the token's exp
    assert 290_000 < int(table[_digest(token)]["exp"]) <= 300_000  # ttl_seconds: 300 (ms)

    for _ in range(3):
        status, h = hx.get(token)
        assert status == 200
        # a hit: jwt_verify never ran (scimgate_jwt_sig_ok is only evaluated on a miss)
        assert (h["x-scimgate-jwt-cached"], h["x-scimgate-jwt-verified"]) == ("1", "")
    assert list(hx.table()) == [_digest(token)]  # hits neither add nor re-track entries


@haproxy
def test_forged_tokens_are_refused_and_never_cached(
    start: Callable[..., BearerGate], keys: dict[str, str]
) -> None:
    hx = start(_policy(keys))
    valid = _token(keys)
    assert hx.get(valid)[0] == 200
    assert hx.get(valid)[1]["x-scimgate-jwt-cached"] == "1"  # cached right before the forgeries

    for name, forged in _forgeries(keys, valid).items():
        status, h = hx.get(forged)
        assert status == 401, name
        assert h["x-scimgate-jwt-cached"] in ("", "0"), name
        assert h["x-scimgate-jwt-verified"] == "", name
        assert hx.get(forged)[0] == 401, name  # and still 401 the second time
    table = hx.table()  # one read: the entries' `exp` (ms left) ticks between reads
    assert list(table) == [_digest(valid)]
    assert table[_digest(valid)]["gpt0"] == str(_exp(valid))
    assert hx.get(valid)[0] == 200


@haproxy
def test_flood_of_forged_tokens_creates_no_entries_and_evicts_nothing(
    start: Callable[..., BearerGate], keys: dict[str, str]
) -> None:
    hx = start(_policy(keys, "{size: 4}"))
    valid = _token(keys)
    assert hx.get(valid)[0] == 200
    head, payload, _sig = valid.split(".")
    conn = http.client.HTTPConnection("127.0.0.1", hx.port, timeout=5)
    for _ in range(1000):  # unique tokens, valid header and claims, random signatures
        forged = f"{head}.{payload}.{_b64url(os.urandom(256))}"
        conn.request("GET", "/", headers={"Authorization": f"Bearer {forged}"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 401
    conn.close()
    assert list(hx.table()) == [_digest(valid)]
    assert hx.get(valid)[1]["x-scimgate-jwt-cached"] == "1"

    # valid tokens beyond the size evict older entries: those are only re-verified
    tokens = [_token(keys, extra={"jti": str(i)}) for i in range(8)]
    for t in tokens:
        assert hx.get(t)[0] == 200
    table = hx.table()
    assert 0 < len(table) <= 4 and set(table) <= {_digest(t) for t in [valid, *tokens]}
    assert all(int(row["gpt0"]) > time.time() for row in table.values())  # each one's exp
    status, h = hx.get(valid)
    assert status == 200 and h["x-scimgate-jwt-verified"] == "1"  # evicted -> verified again


@haproxy
def test_cached_token_still_expires_at_exp(
    start: Callable[..., BearerGate], keys: dict[str, str]
) -> None:
    hx = start(_policy(keys, leeway=0))
    now = int(time.time())
    token = _token(keys, extra={"exp": now + 2})
    assert hx.get(token)[0] == 200
    assert hx.get(token)[1]["x-scimgate-jwt-cached"] == "1"
    while time.time() < now + 3.2:
        time.sleep(0.1)
    status, h = hx.get(token)
    assert status == 401
    assert h["www-authenticate"] == 'Bearer realm="scimgate"'
    assert hx.table()[_digest(token)]["gpt0"] == str(now + 2)  # still in the table, yet refused


@haproxy
def test_claim_checks_gate_the_cache(
    start: Callable[..., BearerGate], keys: dict[str, str]
) -> None:
    # validly signed tokens that fail a claim check are refused without a lookup or an entry
    hx = start(_policy(keys, leeway=0))
    now = int(time.time())
    for token in [
        _token(keys, issuer="https://evil.example.com/"),
        _token(keys, audience="other-app"),
        _token(keys, extra={"exp": now - 1}),
    ]:
        status, h = hx.get(token)
        assert status == 401
        assert (h["x-scimgate-jwt-cached"], h["x-scimgate-jwt-verified"]) == ("", "")  # never
    not_yet = _token(keys, extra={"nbf": now + 2, "exp": now + 60})
    assert hx.get(not_yet)[0] == 401
    assert hx.table() == {}
    while time.time() < now + 2.2:
        time.sleep(0.1)
    assert hx.get(not_yet)[1]["x-scimgate-jwt-verified"] == "1"
    assert hx.get(not_yet)[1]["x-scimgate-jwt-cached"] == "1"
    assert list(hx.table()) == [_digest(not_yet)]


@haproxy
def test_entries_expire_after_ttl_and_are_reverified(
    start: Callable[..., BearerGate], keys: dict[str, str]
) -> None:
    hx = start(_policy(keys, "{ttl_seconds: 1}"))
    token = _token(keys)
    assert hx.get(token)[1]["x-scimgate-jwt-verified"] == "1"
    assert hx.get(token)[1]["x-scimgate-jwt-cached"] == "1"
    deadline = time.monotonic() + 5
    while hx.table() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hx.table() == {}
    status, h = hx.get(token)
    assert status == 200 and h["x-scimgate-jwt-verified"] == "1"


@haproxy
def test_disabled_cache_has_no_table_and_still_enforces(
    start: Callable[..., BearerGate], keys: dict[str, str]
) -> None:
    hx = start(_policy(keys, "{enabled: false}"))
    valid = _token(keys)
    assert hx.get(valid)[0] == 200
    assert hx.get(valid)[0] == 200
    assert "x-scimgate-jwt-cached" not in hx.get(valid)[1]
    assert "No such table" in hx.cli(f"show table {TABLE}")
    for name, forged in _forgeries(keys, valid).items():
        assert hx.get(forged)[0] == 401, name


@haproxy
def test_fragment_leaves_a_foreign_sc2_alone(tmp_path: Path, keys: dict[str, str]) -> None:
    """A host frontend that already tracks sc2: scimgate neither marks its entry nor caches."""
    policy = _policy(keys)
    _write_map(tmp_path / "maps", policy)
    frag = render_config(
        policy, mode="fragment", map_dir=str(tmp_path / "maps"), hmac_secret_b64=SECRET_B64
    )
    table_line = frag.split(f"#     backend {TABLE}\n#         ", 1)[1].split("\n", 1)[0]
    sessions_line = frag.split(f"#     backend {SESSIONS_TABLE}\n#         ", 1)[1].split("\n", 1)[
        0
    ]
    port, sock = free_port(), tmp_path / "f.sock"
    cfg = tmp_path / "f.cfg"
    cfg.write_text(
        f"global\n    stats socket {sock} mode 600 level admin\n"
        f"    set-var proc.scimgate_hmac str({SECRET_B64})\n"
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n"
        "    timeout connect 5s\n"
        f"frontend existing\n    bind 127.0.0.1:{port}\n"
        "    http-request track-sc2 src table ratelimit\n"
        + "".join(f"    {line}\n" for line in frag.splitlines())
        + f"backend {TABLE}\n    {table_line}\n"
        + f"backend {SESSIONS_TABLE}\n    {sessions_line}\n"  # as the fragment's notes ask
        + "backend ratelimit\n    stick-table type ip size 10 expire 60s store gpt0\n"
    )
    assert_config_valid(cfg)
    hx = launch_gate(cfg, port, sock)
    try:
        token = _token(keys)
        assert hx.get(token)[0] == 200
        assert hx.get(token)[0] == 200
        assert hx.table() == {}
        assert [row["gpt0"] for row in hx.table("ratelimit").values()] == ["0"]
        assert hx.get(_forgeries(keys, token)["other_key_signature"])[0] == 401
    finally:
        hx.stop()
