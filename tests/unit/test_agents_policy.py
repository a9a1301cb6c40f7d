"""Agents in the policy (pure): the model's checks, an agent's entries (its own key
namespace, suspension, agent types), and the rendered rules."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from scimgate.policy import PolicyError, parse_policy, render_config
from scimgate.policy.agents import agent_entries, agent_identity_key
from scimgate.policy.compiler import identity_key
from scimgate.policy.jwtmint import demo_policy_yaml

SECRET = b"0123456789abcdef0123456789abcdef"
SECRET_B64 = base64.b64encode(SECRET).decode()
LIMITED = """\
  - name: limited
    from: {hosts: ["*"], path_prefix: /limited}
    allow_agents: {types: [autonomous]}
    rate_limit: {requests: 5, per: 1m}
    to: {return: "x"}
  - name: home
"""


def _demo(extra_routes: str = "") -> str:
    text = demo_policy_yaml(agents=True)
    return text.replace("  - name: home\n", extra_routes, 1) if extra_routes else text


def test_agent_key_is_in_its_own_namespace() -> None:
    assert agent_identity_key("Alice@Example.com", SECRET) != identity_key(
        "alice@example.com", SECRET
    )
    # what HAProxy computes: str(agent:),concat(,claim,),lower,hmac(sha256,secret),hex
    expected = hmac.new(SECRET, b"agent:ci-bot", hashlib.sha256).hexdigest().upper()
    assert agent_identity_key(" CI-Bot ", SECRET) == expected


def test_agent_entries() -> None:
    policy = parse_policy(_demo(LIMITED))
    agents = policy.identity.agents
    groups = [{"displayName": "Automation"}]
    agent = {"subject": "spiffe-bot", "agentUserName": "ci-bot", "agentType": "Autonomous"}
    types = frozenset({"autonomous"})
    entries = agent_entries(agent, groups, ["0oa-1"], False, agents, policy, types, SECRET)
    assert set(entries) == {
        agent_identity_key(i, SECRET) for i in ("spiffe-bot", "ci-bot", "0oa-1")
    }
    assert set(entries.values()) == {",at-autonomous,automation,"}
    # a type no route names stays out of the value
    assert set(agent_entries(agent, groups, [], False, agents, policy, frozenset(), SECRET)
               .values()) == {",automation,"}  # fmt: skip
    # suspended, inactive, no agent settings, non-ASCII: no entry
    assert agent_entries(agent, groups, [], True, agents, policy, types, SECRET) == {}
    inactive = {**agent, "active": False}
    assert agent_entries(inactive, groups, [], False, agents, policy, types, SECRET) == {}
    assert agent_entries(agent, groups, [], False, None, policy, types, SECRET) == {}
    odd = {"subject": "bøt", "agentUserName": "a b"}
    assert agent_entries(odd, groups, [], False, agents, policy, types, SECRET) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (demo_policy_yaml(agents=True).replace("  agents:\n", "  agents_off:\n", 1), "unknown key"),
        (_demo(LIMITED).replace("  automation:", "  at-bots: {idp_groups: [X]}\n  automation:"),
         "reserved for agent types"),
        (_demo(LIMITED).replace("types: [autonomous]", "groups: [nope]"), "undefined policy group"),
        (_demo(LIMITED).replace("allow_agents: {types: [autonomous]}", "allow_agents: {}"),
         "needs 'groups' or 'types'"),
        (_demo(LIMITED).replace("per: 1m", "per: 10h"), "invalid period"),
    ],
)  # fmt: skip
def test_policy_checks(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(text)


def test_allow_agents_needs_identity_agents() -> None:
    text = _demo(LIMITED)
    start = text.index("  agents:\n")
    end = text.index("\ngroups:")
    with pytest.raises(PolicyError, match="allow_agents needs"):
        parse_policy(text[:start] + text[end:])


def test_rendered_agent_rules() -> None:
    policy = parse_policy(_demo(LIMITED))
    cfg = render_config(policy, map_dir="/m", hmac_secret_b64=SECRET_B64, check_files=False)
    assert "str(agent:),concat(,txn.scimgate_agent_claim,)" in cfg
    assert "jwt_payload_query('$.act.sub')" in cfg
    assert "backend scimgate_rate_limited" in cfg
    assert "store http_req_rate(60s)" in cfg and "sc_http_req_rate(1) gt 5" in cfg
    assert "deny_status 429" in cfg
    # the person's check on /admin applies to people's tokens only; agents are refused there
    assert "str(group_denied) if scimgate_route_admin !scimgate_agent_token" in cfg
    assert "str(agent_denied) if scimgate_route_admin scimgate_agent_token" in cfg
    # a policy without identity.agents renders no agent rule
    cfg = render_config(parse_policy(demo_policy_yaml()), map_dir="/m", hmac_secret_b64=SECRET_B64,
                        check_files=False)  # fmt: skip
    assert "agent" not in cfg.replace("user_agent", "")
