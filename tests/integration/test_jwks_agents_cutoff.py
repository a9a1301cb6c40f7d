"""Where issue 12 (JWKS keys, token cut-off) meets issue 13 (agents, rate limits), against a
real HAProxy 2.6: one config with a JWKS-pinned key, the verified-token cache (stick counter
sc2), a per-identity rate limit (sc0), the live-session table (sc1), agents with RFC 8693 delegation and the cut-off on.

The map holds agents' values in the one grammar ``,at-<type>,<groups>,@<not-before>``; a
not-before in the future stands for "deprovisioned and provisioned again after this token
was issued" (the store's side is tests/integration/test_cutoff_store.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization

from scimgate.haproxy.process import check_config
from scimgate.policy import (
    OVERLAY_MAP_NAME,
    entries_for_user,
    map_file_names,
    parse_policy,
    render_config,
)
from scimgate.policy.agents import agent_entries
from scimgate.policy.compiler import with_not_before
from scimgate.policy.jwks import PinnedKey
from scimgate.policy.sessions import SESSIONS_TABLE
from tests.support.haproxy import BearerGate, launch
from tests.support.jwks_issuer import SigningKey, new_key
from tests.support.net import free_port
from tests.support.rendered import SECRET, SECRET_B64

pytestmark = pytest.mark.haproxy

ISSUER = "https://idp.example.com/"
AUDIENCE = "scimgate-demo"
POLICY = f"""\
identity:
  source: jwt
  jwt:
    issuer: {ISSUER}
    audience: {AUDIENCE}
    claim: email
    cutoff: true
    jwks: {{}}
  key_attributes: [userName]
  agents:
    claims: [azp, sub]
    key_attributes: [subject]
    token: {{idtyp: app, without_user_claim: false}}
groups:
  automation: {{idp_groups: ["Automation"]}}
routes:
  - name: limited
    from: {{hosts: ["*"], path_prefix: /limited}}
    allow_groups: [any]
    allow_agents: {{types: [autonomous]}}
    rate_limit: {{requests: 3, per: 10s}}
    to: {{return: "limited"}}
  - name: api
    from: {{hosts: ["*"], path_prefix: /api}}
    allow_groups: [any]
    allow_agents: {{groups: [automation]}}
    to: {{return: "api"}}
default: deny
"""
PERSON = "ann@example.com"
# agent subject -> its not-before offset from now (None: never deprovisioned)
AGENTS: dict[str, int | None] = {"fresh-bot": None, "old-bot": -100, "back-bot": 100}


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BearerGate, SigningKey]]:
    d = tmp_path_factory.mktemp("jwks-agents")
    key = new_key("k1")
    (d / "k1.pem").write_bytes(key.public_pem())
    policy = parse_policy(POLICY)
    entries = entries_for_user({"userName": PERSON}, [], policy, SECRET)
    now = int(time.time())
    automation = [{"displayName": "Automation"}]
    for subject, offset in AGENTS.items():
        agent = {"subject": subject, "agentType": "Autonomous", "active": True}
        for k, v in agent_entries(
            agent, automation, [], False, policy.identity.agents, policy,
            frozenset({"autonomous"}), SECRET,
        ).items():  # fmt: skip
            assert v == ",at-autonomous,automation,"
            entries[k] = with_not_before(v, None if offset is None else now + offset)
    maps = d / "maps"
    maps.mkdir()
    (maps / map_file_names(1)[0]).write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
    (maps / OVERLAY_MAP_NAME).write_text("")
    port = free_port()
    cfg = d / "haproxy.cfg"
    cfg.write_text(
        render_config(
            policy, map_dir=str(maps), hmac_secret_b64=SECRET_B64, bind=f"127.0.0.1:{port}",
            stats_socket=str(d / "admin.sock"),
            jwt_keys=[PinnedKey("k1", key.alg, str(d / "k1.pem"))],
        )
    )  # fmt: skip
    text = cfg.read_text()
    # the rate limit, the live sessions and the cache: three counters, none shared
    assert all(f"track-sc{n} " in text for n in (0, 1, 2))
    ok, output = check_config(cfg)
    assert ok, output
    hx = launch(cfg, ports=[port], stats_socket=d / "admin.sock")
    try:
        yield BearerGate(hx), key
    finally:
        hx.stop()


def _mint(key: SigningKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300, **claims}
    pem = key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pyjwt.encode(body, pem, algorithm=key.alg, headers={"kid": key.kid})


def _agent(key: SigningKey, subject: str, **claims: Any) -> str:
    return _mint(key, sub=subject, azp=subject, idtyp="app", **claims)


def test_agent_tokens_under_jwks_rate_limit_and_cache(gate: tuple[BearerGate, SigningKey]) -> None:
    bearer, key = gate
    token = _agent(key, "fresh-bot")
    codes = [bearer.get(token, "/limited")[0] for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429], codes  # sc0 counts while sc2 caches
    assert bearer.table()  # the verified-token cache holds the token
    # the live-session table tracked the allowed requests of the rate-limited route too
    # (keys are identity|route|frontend|client; its own counter, not the rate limit's)
    sessions = bearer.table(SESSIONS_TABLE)
    assert any("|LIMITED|" in key for key in sessions), sessions  # table() upper-cases
    assert bearer.get(token, "/api")[0] == 200  # the at- type and the group both match


def test_agent_cut_off_by_its_not_before(gate: tuple[BearerGate, SigningKey]) -> None:
    bearer, key = gate
    # deprovisioned long before this token: its groups still match once the time is split off
    assert bearer.get(_agent(key, "old-bot"), "/api")[0] == 200
    # provisioned again after this token was issued: cut off, 401
    status, _ = bearer.get(_agent(key, "back-bot"), "/api")
    assert status == 401
    # an agent token without iat is refused like a person's
    no_iat = _agent(key, "fresh-bot", iat=None)
    assert bearer.get(no_iat, "/api")[0] == 401


def test_delegated_token_cut_off_by_the_acting_agent(gate: tuple[BearerGate, SigningKey]) -> None:
    bearer, key = gate
    assert bearer.get(_mint(key, email=PERSON, act={"sub": "old-bot"}), "/api")[0] == 200
    assert bearer.get(_mint(key, email=PERSON, act={"sub": "back-bot"}), "/api")[0] == 401
    assert bearer.get(_mint(key, email=PERSON), "/api")[0] == 200  # the person alone
