"""Keys from the issuer's JWKS, rotated while requests flow (``identity.jwt.jwks``).

One real `scimgate up` (HAProxy 2.6 + SCIM + sync engine + the JWKS follower) trusting a
local OIDC issuer on loopback (``tests.support.jwks_issuer``: discovery, JWKS with ETag and
``max-age=1``). The issuer publishes a new key, signs with it once scimgate holds it, then
withdraws the old one: no valid request fails across the reloads, the old key's tokens
keep working during the overlap and fail after it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.jwks_issuer import JwksIssuer
from tests.support.net import free_port
from tests.support.scim import create_user
from tests.support.up import UpStack, scimgate, start_up

pytestmark = pytest.mark.haproxy

OVERLAP = 6
USER = "rotor@example.com"


def policy_yaml(issuer: str) -> str:
    return f"""\
identity:
  source: jwt
  jwt:
    issuer: {issuer}
    audience: scimgate-test
    claim: email
    jwks: {{overlap_seconds: {OVERLAP}, min_refresh_seconds: 1, max_refresh_seconds: 2}}
  key_attributes: [userName]
routes:
  - name: home
    from: {{path_prefix: /}}
    allow_groups: [any]
    to: {{return: "hello"}}
"""


@pytest.fixture(scope="module")
def idp() -> Iterator[JwksIssuer]:
    with JwksIssuer(max_age=1) as issuer:
        issuer.add_key("k1")
        yield issuer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, idp: JwksIssuer) -> Iterator[UpStack]:
    directory = tmp_path_factory.mktemp("jwks")
    (directory / "policy.yaml").write_text(policy_yaml(idp.issuer))
    up = start_up(directory)
    try:
        with up.scim() as scim:
            create_user(scim, USER)
        yield up
    finally:
        up.stop()


def get(stack: UpStack, token: str) -> int:
    """One request on a fresh connection (what survives a reload is the listener)."""
    r = httpx.get(
        stack.info["haproxy_url"] + "/", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return r.status_code


def key_state(stack: UpStack) -> dict[str, object]:
    state = json.loads((stack.directory / "keys" / "jwks" / "state.json").read_text())
    assert isinstance(state, dict)
    return state


def wait_for(predicate: object, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_initial_keys_from_discovery(stack: UpStack, idp: JwksIssuer) -> None:
    assert get(stack, idp.mint("k1", USER)) == 200
    state = key_state(stack)
    assert state["jwks_uri"] == idp.issuer + "/keys"
    assert [k["kid"] for k in state["keys"]] == ["k1"]  # type: ignore[attr-defined]
    pem = stack.directory / "keys" / "jwks" / state["keys"][0]["file"]  # type: ignore[index]
    assert pem.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    # `scimgate jwt keys` lists them; `jwt mint` has no key to sign with in this mode
    out = scimgate("jwt", "keys", "--dir", str(stack.directory))
    assert out.returncode == 0, out.stderr
    assert any(line.startswith("k1 ") and "RS256" in line for line in out.stdout.splitlines())
    out = scimgate("jwt", "mint", "--dir", str(stack.directory), USER)
    assert out.returncode != 0 and "JWKS" in out.stderr
    # HTTP caching: the follower revalidates with the ETag and gets 304s
    fetched = idp.jwks_fetches
    wait_for(lambda: idp.not_modified >= 1 and idp.jwks_fetches > fetched, 10, "a 304")


def test_bad_tokens_are_refused(stack: UpStack, idp: JwksIssuer) -> None:
    good = idp.mint("k1", USER)
    k1 = idp.keys["k1"]
    payload = idp.claims(USER)
    # unknown kid (a key the JWKS never listed, signing correctly)
    idp.add_key("stranger", publish=False)
    assert get(stack, idp.mint("stranger", USER)) == 401
    # a known kid but another key's signature
    forged = idp.mint("stranger", USER).split(".")
    head = good.split(".")[0]
    assert get(stack, f"{head}.{forged[1]}.{forged[2]}") == 401
    # alg none, with and without the known kid
    assert get(stack, idp.forge({"alg": "none", "kid": "k1"}, payload, None)) == 401
    assert get(stack, idp.forge({"alg": "none"}, payload, None)) == 401
    # HS256 with the RSA public key (PEM) as the HMAC secret: the alg-confusion attack
    confused = idp.forge({"alg": "HS256", "typ": "JWT", "kid": "k1"}, payload, k1.public_pem())
    assert get(stack, confused) == 401
    # the token's alg must be the key's: an RS256 signature sent as RS512 fails
    assert get(stack, good) == 200


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_weak_and_mismatched_keys_are_not_loaded(stack: UpStack, idp: JwksIssuer) -> None:
    weak = idp.add_key("weak", "rsa1024", publish=False)
    p521 = idp.add_key("p521", "ec521", publish=False)
    mismatched = idp.add_key("mism", "rsa2048", publish=False)
    with idp._lock:
        idp.extra_jwks = [weak.jwk(), p521.jwk(), {**mismatched.jwk(), "alg": "ES256"}]
    try:
        wait_for(lambda: len(key_state(stack)["refused"]) == 3, 10, "three refused keys")  # type: ignore[arg-type]
        refused = " ".join(key_state(stack)["refused"])  # type: ignore[arg-type]
        assert "1024 bits" in refused and "P-521" in refused and "does not fit" in refused
        for kid in ("weak", "p521", "mism"):
            assert get(stack, idp.mint(kid, USER)) == 401
        assert get(stack, idp.mint("k1", USER)) == 200
    finally:
        with idp._lock:
            idp.extra_jwks = []


def test_rotation_mid_traffic(stack: UpStack, idp: JwksIssuer) -> None:
    reloads_before = _reloads(stack)
    old_token = idp.mint("k1", USER)
    signing = {"kid": "k1"}
    failures: list[str] = []
    counts = {"ok": 0}
    stop = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + 120  # bounded
        while not stop.is_set() and time.monotonic() < deadline:
            token = idp.mint(signing["kid"], USER)
            for t in (token, old_token):
                try:
                    status = get(stack, t)
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if status == 200:
                    counts["ok"] += 1
                elif t is token or time.time() < withdrawn_at[0] + OVERLAP - 1:
                    failures.append(f"{status} for a token signed by {signing['kid']}")

    withdrawn_at = [float("inf")]
    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.5)
        # 1. the IdP publishes k2 ahead of use (as Okta, Entra and Google do)
        idp.add_key("k2", "ec256")
        wait_for(lambda: get(stack, idp.mint("k2", USER)) == 200, 15, "k2 accepted")
        # 2. it signs with k2, then withdraws k1
        signing["kid"] = "k2"
        time.sleep(0.5)
        idp.withdraw("k1")
        withdrawn_at[0] = time.time()
        wait_for(lambda: key_state(stack)["keys"][0].get("removed"), 10, "k1 marked removed")  # type: ignore[index,union-attr]
        # 3. inside the overlap, k1's tokens still pass (checked by the traffic thread)
        time.sleep(1.0)
        assert get(stack, old_token) == 200
        # 4. after the overlap, k1's tokens fail; k2's pass
        took = wait_for(lambda: get(stack, old_token) == 401, OVERLAP + 10, "k1 refused")
    finally:
        stop.set()
        worker.join(30)
    print(
        f"rotation: {counts['ok']} requests ok, {len(failures)} failed; k1 refused {took:.1f} s after its withdrawal"
    )
    assert not failures, failures[:5]
    assert counts["ok"] > 10  # requests flowed through both reloads (fewer on a loaded machine)
    assert get(stack, idp.mint("k2", USER)) == 200
    assert took >= OVERLAP - 2.5  # not refused before the overlap ended
    assert _reloads(stack) >= reloads_before + 2  # k2 added, k1 expired: hitless reloads

    # every rotation is audited
    kinds = _audit_details(stack)
    assert any(d["added"] and d["added"][0]["kid"] == "k2" for d in kinds)
    assert any(d["expired"] and d["expired"][0]["kid"] == "k1" for d in kinds)

    # `scimgate status` shows the key set
    out = scimgate("status", "--dir", str(stack.directory))
    assert "JWT KEYS" in out.stdout, out.stdout + out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("k2 "))
    assert "ES256" in line and "listed" in line
    assert not any(x.startswith("k1 ") for x in out.stdout.splitlines())


def _reloads(stack: UpStack) -> int:
    from scimgate.haproxy.master import master_command, parse_show_proc
    from scimgate.haproxy.runtime import RuntimeAddress

    address = RuntimeAddress.parse(stack.info["master_api"])
    return parse_show_proc(master_command(address, "show proc", 5)).reloads


def _audit_details(stack: UpStack) -> list[dict[str, list[dict[str, str]]]]:
    db = Path(stack.directory) / "scimgate.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT detail FROM audit_events WHERE kind = 'jwt.keys'").fetchall()
    return [json.loads(r[0]) for r in rows]


def test_issuer_down_at_start_then_back(tmp_path: Path) -> None:
    """No key yet: every token 401 (nothing else); once the issuer answers, the next fetch
    loads its keys and reloads HAProxy, without a restart."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    (tmp_path / "policy.yaml").write_text(policy_yaml(issuer))
    up = start_up(tmp_path)
    try:
        assert "JWKS not fetched" in up.log
        with up.scim() as scim:
            create_user(scim, USER)
        with JwksIssuer(max_age=1, port=port) as idp:
            idp.add_key("late")
            token = idp.mint("late", USER)
            assert get(up, token) == 401
            took = wait_for(lambda: get(up, token) == 200, 20, "the late key")
        print(f"issuer back: its key accepted after {took:.1f} s")
        out = scimgate("status", "--dir", str(tmp_path))
        assert any(line.startswith("late ") for line in out.stdout.splitlines()), out.stdout
    finally:
        up.stop()
