"""A token whose ``kid`` the running config does not hold makes scimgate fetch the JWKS at
once (``identity.jwt.jwks.refresh_on_unknown_kid``), not at the next scheduled refresh.

One real `scimgate up` trusting a loopback issuer; the scheduled refresh is 10 minutes away
(``min_refresh_seconds: 600``), so a key accepted within seconds was fetched because HAProxy
recorded its kid. A flood of random kids costs at most one fetch per
``unknown_kid_refresh_seconds``; kids of a bad shape, or on tokens whose claims fail, are
never recorded.
"""

from __future__ import annotations

import json
import math
import secrets
import sqlite3
import time
from collections.abc import Iterator

import httpx
import pytest

from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.master import master_command
from scimgate.policy.render_identity import JWT_KID_MISS_TABLE
from tests.support.jwks_issuer import JwksIssuer
from tests.support.scim import create_user
from tests.support.up import UpStack, start_up

pytestmark = pytest.mark.haproxy

USER = "newkey@example.com"
INTERVAL = 2  # unknown_kid_refresh_seconds
SCHEDULED = 600  # the next scheduled fetch, from start-up


@pytest.fixture(scope="module")
def idp() -> Iterator[JwksIssuer]:
    with JwksIssuer(max_age=SCHEDULED) as issuer:
        issuer.add_key("k1")
        yield issuer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, idp: JwksIssuer) -> Iterator[UpStack]:
    directory = tmp_path_factory.mktemp("kidmiss")
    (directory / "policy.yaml").write_text(f"""\
identity:
  source: jwt
  jwt:
    issuer: {idp.issuer}
    audience: scimgate-test
    claim: email
    jwks:
      min_refresh_seconds: {SCHEDULED}
      max_refresh_seconds: {SCHEDULED}
      unknown_kid_refresh_seconds: {INTERVAL}
  key_attributes: [userName]
routes:
  - name: home
    from: {{path_prefix: /}}
    allow_groups: [any]
    to: {{return: "hello"}}
""")
    up = start_up(directory)
    try:
        with up.scim() as scim:
            create_user(scim, USER)
        yield up
    finally:
        up.stop()


def get(stack: UpStack, token: str) -> int:
    r = httpx.get(
        stack.info["haproxy_url"] + "/", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return r.status_code


def miss_table(stack: UpStack) -> str:
    address = RuntimeAddress.parse(stack.info["runtime_api"])
    return master_command(address, f"show table {JWT_KID_MISS_TABLE}", 5)


def forced_refreshes(stack: UpStack) -> list[dict[str, object]]:
    with sqlite3.connect(stack.directory / "scimgate.db") as conn:
        rows = conn.execute(
            "SELECT detail FROM audit_events WHERE kind = 'jwt.keys.refresh' ORDER BY seq"
        ).fetchall()
    return [json.loads(r[0]) for r in rows]


def test_new_key_signed_at_once_is_accepted_within_seconds(stack: UpStack, idp: JwksIssuer) -> None:
    assert get(stack, idp.mint("k1", USER)) == 200
    fetches = idp.jwks_fetches
    # the IdP publishes k2 and signs with it at the same moment (Keycloak, Auth0)
    idp.add_key("k2", "ec256")
    token = idp.mint("k2", USER)
    assert get(stack, token) == 401  # the running config does not hold k2 yet
    start = time.monotonic()
    took = None
    while time.monotonic() - start < 15:  # bounded
        if get(stack, token) == 200:
            took = time.monotonic() - start
            break
        time.sleep(0.1)
    assert took is not None, "k2's token still refused 15 s after its first use"
    print(f"unknown kid: k2 accepted {took:.2f} s after its first 401")
    assert took < 10 < SCHEDULED
    assert idp.jwks_fetches >= fetches + 1
    assert get(stack, idp.mint("k1", USER)) == 200  # k1 still listed, still accepted
    events = forced_refreshes(stack)
    assert any(e["reason"] == "unknown_kid" and e["found"] == ["k2"] for e in events), events


def test_kids_of_bad_shape_or_failing_claims_are_not_recorded(
    stack: UpStack, idp: JwksIssuer
) -> None:
    idp.add_key("signer", publish=False)
    key = idp.keys["signer"]
    import jwt as pyjwt

    def token(kid: str, **claims: object) -> str:
        payload = {**idp.claims(USER), **claims}
        return pyjwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": kid})

    long_kid = "a" * 129
    assert get(stack, token(long_kid)) == 401
    assert get(stack, token("has space")) == 401
    assert get(stack, token("quote'kid")) == 401
    assert get(stack, token("wrongaud-kid", aud="someone-else")) == 401
    assert get(stack, token("expired-kid", exp=int(time.time()) - 3600)) == 401
    assert get(stack, token("good-shape-kid")) == 401
    table = miss_table(stack)
    assert "key=good-shape-kid " in table, table
    for kid in (long_kid, "has", "quote", "wrongaud-kid", "expired-kid"):
        assert f"key={kid}" not in table, table
    # known kids are never recorded
    assert "key=k1 " not in table and "key=k2 " not in table


def test_flood_of_random_kids_costs_one_fetch_per_interval(stack: UpStack, idp: JwksIssuer) -> None:
    idp.add_key("flood", publish=False)
    time.sleep(INTERVAL + 0.5)  # the previous tests' forced fetches are one interval back
    before_fetches = idp.jwks_fetches
    before_events = len(forced_refreshes(stack))
    window = 2.5 * INTERVAL
    sent = 0
    start = time.monotonic()
    with httpx.Client(timeout=10) as client:
        while time.monotonic() - start < window and sent < 20000:  # bounded
            kid = "rnd-" + secrets.token_hex(8)
            r = client.get(
                stack.info["haproxy_url"] + "/",
                headers={"Authorization": f"Bearer {_reuse(idp, kid)}"},
            )
            assert r.status_code == 401
            sent += 1
    elapsed = time.monotonic() - start
    time.sleep(1.5)  # the follower's last poll of the window
    fetches = idp.jwks_fetches - before_fetches
    events = len(forced_refreshes(stack)) - before_events
    allowed = math.ceil((elapsed + 1.5) / INTERVAL) + 1
    print(f"flood: {sent} random kids in {elapsed:.1f} s -> {fetches} JWKS fetches")
    assert sent > 50
    assert 1 <= fetches <= allowed, (fetches, allowed)
    assert events == fetches
    # the table stays at its fixed size
    head = miss_table(stack).splitlines()[0]
    used = int(head.split("used:")[1].split()[0])
    assert used <= 1000, head
    assert get(stack, idp.mint("k2", USER)) == 200


_FLOOD_BASE: dict[str, str] = {}


def _reuse(idp: JwksIssuer, kid: str) -> str:
    """A token of the flood: one signed payload, its header swapped for a random kid (the
    signature then fails, as an attacker's would; the claims pass, so the kid is recorded)."""
    import base64

    if "token" not in _FLOOD_BASE:
        _FLOOD_BASE["token"] = idp.mint("flood", USER)
    _head, payload, sig = _FLOOD_BASE["token"].split(".")
    header = json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode()
    head = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
    return f"{head}.{payload}.{sig}"
