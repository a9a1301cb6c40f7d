"""Agents at the proxy, end to end: an IdP provisions agents over SCIM, agents present
tokens (Entra-shaped ``idtyp: app`` with ``azp``, Okta-shaped ``cid`` through an
AgenticApplication's clientId, RFC 8693 delegated ``act.sub``) to a real HAProxy started by
``scimgate up``; the owner cascade and a parent's deactivation take effect at the very next
request; per-identity rate
limits in stick tables, logged.

Nothing here waits after a SCIM response: `up` runs with read-your-writes, so the next
request must see the change. The only waits are for the token cut-off (the demo policy's
``identity.jwt.cutoff``): a token is minted in the second after a deprovisioning.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scimgate.policy.jwtmint import demo_policy_yaml, mint_jwt
from scimgate.policy.model import load_policy
from tests.support.scim import GROUP_SCHEMA, create_user
from tests.support.up import UpStack, scimgate, start_up

pytestmark = pytest.mark.haproxy

AGENT = "urn:ietf:params:scim:schemas:core:2.0:Agent"
LIMITED_ROUTE = """\
  - name: limited
    from: {hosts: ["*"], path_prefix: /limited}
    allow_groups: [any]
    allow_agents: {groups: [automation]}
    rate_limit: {requests: 3, per: 10s}
    to: {return: "limited"}
  - name: bots
    from: {hosts: ["*"], path_prefix: /bots}
    allow_agents: {types: [autonomous]}
    to: {return: "bots"}
  - name: home
"""
OFF = {"Operations": [{"op": "replace", "path": "active", "value": False}]}
ON = {"Operations": [{"op": "replace", "path": "active", "value": True}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    directory = tmp_path_factory.mktemp("agents")
    policy = demo_policy_yaml(agents=True).replace("  - name: home\n", LIMITED_ROUTE, 1)
    (directory / "policy.yaml").write_text(policy)
    up = start_up(directory)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def scim(stack: UpStack) -> Iterator[httpx.Client]:
    with stack.scim() as client:
        yield client


@pytest.fixture(scope="module")
def automation(scim: httpx.Client) -> str:
    r = scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "Automation"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="module")
def engineering(scim: httpx.Client) -> str:
    r = scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "Engineering"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture
def web(stack: UpStack) -> Iterator[httpx.Client]:
    with stack.browser() as client:
        yield client


def _token(stack: UpStack, claims: dict[str, Any]) -> str:
    jwt = load_policy(stack.info["policy_file"]).identity.jwt
    assert jwt is not None
    subject = claims.pop("sub", None)
    return mint_jwt(
        Path(stack.info["jwt_private_key"]).read_text(), subject_claim="sub",
        identity=subject, algorithm=jwt.algorithm, issuer=jwt.issuer, audience=jwt.audience,
        extra=claims,
    )  # fmt: skip


def _next_second(deprovisioned: float) -> None:
    """Wait for the second after a deprovisioning (iat has whole seconds: a token of that
    very second is cut off too); at most about one second."""
    time.sleep(max(0.0, int(deprovisioned) + 1 - time.time()) + 0.05)


def _fresh_token(stack: UpStack, claims: dict[str, Any], deprovisioned: float) -> str:
    """A token the agent fetches after its reprovisioning (issued after the cut-off)."""
    _next_second(deprovisioned)
    return _token(stack, claims)


def _get(web: httpx.Client, token: str, path: str) -> int:
    return web.get(path, headers={"Authorization": f"Bearer {token}"}).status_code


def _agent(scim: httpx.Client, group: str | None, **attrs: Any) -> dict[str, Any]:
    r = scim.post("/Agents", json={"schemas": [AGENT], "name": f"bot-{uuid.uuid4().hex[:6]}",
                                   **attrs})  # fmt: skip
    assert r.status_code == 201, r.text
    agent = dict(r.json())
    if group is not None:
        r = scim.patch(f"/Groups/{group}", json={"Operations": [
            {"op": "add", "path": "members", "value": [{"value": agent["id"]}]}]})  # fmt: skip
        assert r.status_code in (200, 204), r.text
    return agent


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_agent_token_allowed_on_its_route_only_and_follows_its_owner(
    stack: UpStack, scim: httpx.Client, web: httpx.Client, automation: str
) -> None:
    owner = create_user(scim, f"{_name('owner')}@example.com")
    subject = _name("ci-bot")
    agent = _agent(scim, automation, subject=subject, owners=[{"value": owner}])
    token = _token(stack, {"sub": subject, "azp": subject, "idtyp": "app"})
    assert _get(web, token, "/api") == 200
    assert _get(web, token, "/") == 403  # user-only routes deny agents
    assert _get(web, token, "/eng") == 403
    # the owner is deactivated: the agent is suspended at the very next request
    assert scim.patch(f"/Users/{owner}", json=OFF).status_code == 200
    suspended = time.time()
    assert _get(web, token, "/api") == 403
    # and restored when the owner returns; the demo policy's token cut-off (issue 12 item 3)
    # treats the agent like a person: its token of before the suspension stays 401, a
    # token it fetches after works
    assert scim.patch(f"/Users/{owner}", json=ON).status_code == 200
    assert _get(web, token, "/api") == 401
    token = _fresh_token(stack, {"sub": subject, "azp": subject, "idtyp": "app"}, suspended)
    assert _get(web, token, "/api") == 200
    # the agent itself deactivated, then deleted
    assert scim.patch(f"/Agents/{agent['id']}", json=OFF).status_code == 200
    deactivated = time.time()
    assert _get(web, token, "/api") == 403
    assert scim.patch(f"/Agents/{agent['id']}", json=ON).status_code == 200
    assert _get(web, token, "/api") == 401
    token = _fresh_token(stack, {"sub": subject, "azp": subject, "idtyp": "app"}, deactivated)
    assert _get(web, token, "/api") == 200
    # the owner deleted: suspended for good
    assert scim.delete(f"/Users/{owner}").status_code == 204
    assert _get(web, token, "/api") == 403


def test_a_sub_agent_is_refused_once_its_parent_is_deactivated(
    stack: UpStack, scim: httpx.Client, web: httpx.Client, automation: str
) -> None:
    """abbey-00 ``parent``: a child stands and falls with its parent (docs/agents.md)."""
    parent = _agent(scim, automation, subject=_name("planner"))
    child_subject = _name("worker")
    _agent(scim, automation, subject=child_subject, parent={"value": parent["id"]})
    claims = {"sub": child_subject, "azp": child_subject, "idtyp": "app"}
    token = _token(stack, dict(claims))
    assert _get(web, token, "/api") == 200
    assert scim.patch(f"/Agents/{parent['id']}", json=OFF).status_code == 200
    cut = time.time()
    assert _get(web, token, "/api") == 403  # the very next request, no wait
    assert scim.patch(f"/Agents/{parent['id']}", json=ON).status_code == 200
    assert _get(web, _fresh_token(stack, dict(claims), cut), "/api") == 200
    # a cycle is refused before anything changes
    r = scim.patch(f"/Agents/{parent['id']}", json={"Operations": [
        {"op": "replace", "path": "parent", "value": {"value": parent["id"]}}]})  # fmt: skip
    assert r.status_code == 400 and r.json()["scimType"] == "invalidValue", r.text


def test_agents_need_the_route_group_and_their_own_namespace(
    stack: UpStack, scim: httpx.Client, web: httpx.Client, automation: str
) -> None:
    outsider = _name("outsider")
    _agent(scim, None, subject=outsider)
    assert _get(web, _token(stack, {"sub": outsider, "idtyp": "app"}), "/api") == 403
    # an agent token naming a person's identity is not that person
    person = f"{_name('dave')}@example.com"
    create_user(scim, person)
    assert _get(web, _token(stack, {"sub": person, "azp": person, "idtyp": "app"}), "/") == 403
    # the person's own token still works
    assert _get(web, stack.mint(person), "/") == 200
    # agentUserName (draft-wzdk-00) identifies too; types select routes (allow_agents.types)
    user_name = _name("typed")
    _agent(scim, None, agentUserName=user_name, agentType="autonomous")
    typed = _token(stack, {"sub": user_name, "idtyp": "app"})
    assert _get(web, typed, "/bots") == 200
    assert _get(web, typed, "/api") == 403
    # a person is not let into an agents-only route
    assert _get(web, stack.mint(person), "/bots") == 403


def test_client_id_of_an_agentic_application(
    stack: UpStack, scim: httpx.Client, web: httpx.Client, automation: str
) -> None:
    """Okta client-credentials shape: sub = cid = the application's client id."""
    agent = _agent(scim, automation)
    client_id = _name("0oa")
    r = scim.post("/AgenticApplications", json={
        "name": _name("app"), "oAuthConfiguration": [{"clientId": client_id}],
        "agents": [{"value": agent["id"], "type": "owned"}]})  # fmt: skip
    assert r.status_code == 201, r.text
    token = _token(stack, {"sub": client_id, "cid": client_id, "idtyp": "app"})
    assert _get(web, token, "/api") == 200
    # the application deactivated: its client id identifies nobody
    assert scim.patch(f"/AgenticApplications/{r.json()['id']}", json=OFF).status_code == 200
    assert _get(web, token, "/api") == 403


def test_delegated_token_needs_both_user_and_agent(
    stack: UpStack, scim: httpx.Client, web: httpx.Client, automation: str, engineering: str
) -> None:
    subject = _name("helper")
    owner = create_user(scim, f"{_name('o')}@example.com")
    _agent(scim, automation, subject=subject, owners=[{"value": owner}])
    bob = f"{_name('bob')}@example.com"
    bob_user = create_user(scim, bob)
    r = scim.patch(f"/Groups/{engineering}", json={"Operations": [
        {"op": "add", "path": "members", "value": [{"value": bob_user}]}]})  # fmt: skip
    assert r.status_code in (200, 204)
    carol = f"{_name('carol')}@example.com"
    create_user(scim, carol)

    def delegated(user: str, actor: str) -> str:
        return _token(stack, {"sub": user, "email": user, "act": {"sub": actor}})

    assert _get(web, delegated(bob, subject), "/api") == 200
    assert _get(web, delegated(carol, subject), "/api") == 403  # the user is not allowed
    assert _get(web, delegated(bob, _name("ghost")), "/api") == 403  # unknown agent
    assert _get(web, delegated(bob, subject), "/eng") == 403  # route takes no agents
    assert _get(web, stack.mint(bob), "/eng") == 200  # bob alone may
    # CLI: scimgate jwt mint --agent NAME --on-behalf-of USER
    out = scimgate("jwt", "mint", "--dir", str(stack.directory), "--agent", subject,
                   "--on-behalf-of", bob)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert _get(web, out.stdout.strip(), "/api") == 200
    # the agent's owner deactivated: the delegated token is denied too
    earlier = delegated(bob, subject)
    assert scim.patch(f"/Users/{owner}", json=OFF).status_code == 200
    suspended = time.time()
    assert _get(web, delegated(bob, subject), "/api") == 403
    assert scim.patch(f"/Users/{owner}", json=ON).status_code == 200
    # token cut-off by the acting agent's not-before: a delegated token issued before the
    # agent's suspension stays 401 (bob himself was never deprovisioned)
    assert _get(web, earlier, "/api") == 401
    _next_second(suspended)
    assert _get(web, delegated(bob, subject), "/api") == 200


def test_agent_token_from_the_cli(
    stack: UpStack, scim: httpx.Client, web: httpx.Client, automation: str
) -> None:
    name = _name("cli-bot")
    _agent(scim, automation, subject=name)
    out = scimgate("jwt", "mint", "--dir", str(stack.directory), "--agent", name)
    assert out.returncode == 0, out.stderr
    assert _get(web, out.stdout.strip(), "/api") == 200
    bad = scimgate("jwt", "mint", "--dir", str(stack.directory))
    assert bad.returncode != 0


def test_per_identity_rate_limit(
    stack: UpStack, scim: httpx.Client, web: httpx.Client, automation: str
) -> None:
    name = _name("busy")
    _agent(scim, automation, subject=name)
    busy = _token(stack, {"sub": name, "idtyp": "app"})
    person = f"{_name('calm')}@example.com"
    create_user(scim, person)
    calm = stack.mint(person)
    codes = [_get(web, busy, "/limited") for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429], codes
    # keyed by identity: someone else is not limited by the busy agent
    assert _get(web, calm, "/limited") == 200
    # and the limit is per route: the busy agent still reaches /api
    assert _get(web, busy, "/api") == 200
    log = Path(stack.info["haproxy_log"])
    deadline = time.monotonic() + 5
    while "decision=rate_limited" not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "no rate_limited line in the HAProxy log"
        time.sleep(0.1)
    line = next(x for x in log.read_text().splitlines() if "decision=rate_limited" in x)
    assert " 429 " in line and "route=limited" in line and name not in line  # pseudonymous
