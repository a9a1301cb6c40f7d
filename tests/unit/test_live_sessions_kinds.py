"""Whom a tracked stream belongs to (a person or an agent) decides which of a route's rules
the cutter judges it by, exactly as the rendered rules do (render_routes, render_agents):
a person by ``allow_groups``, an agent by ``allow_agents``; the kind is recorded by HAProxy
in the tracked key at the request that opened the stream."""

from __future__ import annotations

import pytest

from scimgate.policy.jwtmint import demo_policy_yaml
from scimgate.policy.model import Policy, parse_policy
from scimgate.policy.render import render_config
from scimgate.policy.render_agents import AGENT_ACL
from scimgate.policy.sessions import AGENT, PERSON, parse_tracked, route_allows, tracking_rules

KEY = "CD" * 32
ROUTES = """\
  - name: bots
    from: {hosts: ["*"], path_prefix: /bots}
    allow_agents: {types: [autonomous]}
    to: {return: "bots"}
  - name: anyagent
    from: {hosts: ["*"], path_prefix: /anyagent}
    allow_agents: {groups: [any]}
    to: {return: "any agent"}
  - name: home
"""


def agents_policy() -> Policy:
    """The demo with agents ('api': engineering people, automation agents) and two
    agents-only routes."""
    return parse_policy(demo_policy_yaml(agents=True).replace("  - name: home\n", ROUTES, 1))


@pytest.mark.parametrize(
    ("kind", "route", "value", "allowed"),
    [
        # an agent on a route for people and agents: allow_agents decides, not allow_groups
        (AGENT, "api", ",automation,", True),
        (AGENT, "api", ",automation,engineering,", True),
        (AGENT, "api", ",engineering,", False),  # agent_denied: engineering is for people
        (AGENT, "api", ",", False),
        (AGENT, "api", ",automation,@1764770000", True),  # the cut-off's not-before
        (AGENT, "api", None, False),  # deactivated / suspended / deleted: no entry
        (AGENT, "api", "-", False),
        # agents-only routes
        (AGENT, "bots", ",at-autonomous,", True),
        (AGENT, "bots", ",automation,", False),
        (AGENT, "bots", ",at-autonomousx,", False),  # a type is matched whole
        (AGENT, "anyagent", ",", True),  # any known agent
        (AGENT, "anyagent", None, False),
        # user-only routes deny agents (no allow_agents), 'any' included
        (AGENT, "home", ",automation,", False),
        (AGENT, "admin", ",admins,", False),
        # people: allow_groups; never an agents-only route
        (PERSON, "api", ",engineering,", True),
        (PERSON, "api", ",automation,", False),  # group_denied: automation is for agents
        (PERSON, "bots", ",at-autonomous,", False),
        (PERSON, "anyagent", ",", False),
        (PERSON, "home", ",", True),
        (PERSON, "home", ",@1764770000", True),
        (PERSON, "admin", ",engineering,", False),
        # no kind (a key tracked before kinds existed): cut only when neither kind may
        (None, "api", ",automation,", True),
        (None, "api", ",engineering,", True),
        (None, "api", ",admins,", False),
        (None, "bots", ",", False),
        (None, "anyagent", ",", True),
        (None, "home", None, False),
    ],
)
def test_route_allows_by_kind(
    kind: str | None, route: str, value: str | None, allowed: bool
) -> None:
    assert route_allows(agents_policy(), route, value, kind) is allowed


def test_without_agents_in_the_policy_every_stream_is_a_persons() -> None:
    """No ``identity.agents``: HAProxy reads no agent token and applies allow_groups to
    every request; so does the cutter, whatever a key says."""
    policy = parse_policy(demo_policy_yaml())
    for kind in (AGENT, PERSON, None):
        assert route_allows(policy, "home", ",", kind) is True
        assert route_allows(policy, "admin", ",engineering,", kind) is False
    assert len(tracking_rules(policy)) == len(tracking_rules()) == 4  # one format, 'p|'


def test_tracked_key_carries_the_kind_haproxy_let_the_request_in_as() -> None:
    rules = tracking_rules(agents_policy())
    assert rules[2].startswith('http-request set-var-fmt(txn.scimgate_session) "p|')
    assert rules[3].startswith('http-request set-var-fmt(txn.scimgate_session) "a|')
    assert rules[3].endswith(f" if {AGENT_ACL}")  # the ACL the agent rules test
    text = render_config(
        agents_policy(), map_dir="/tmp/maps", hmac_secret_b64="c2VjcmV0c2VjcmV0c2VjcmV0",
        check_files=False,
    )  # fmt: skip
    lines = [line.strip() for line in text.splitlines()]
    assert rules[3] in lines and lines.index(rules[3]) > lines.index(
        f"acl {AGENT_ACL} var(txn.scimgate_agent) -m bool"
    )
    for kind in (AGENT, PERSON):
        t = parse_tracked(f"{kind}|{KEY}|api|fe_scimgate|127.0.0.1:4000")
        assert t is not None and (t.kind, t.identity_key, t.route) == (kind, KEY, "api")
    untagged = parse_tracked(f"{KEY}|api|fe_scimgate|127.0.0.1:4000")
    assert untagged is not None and untagged.kind is None
    for bad in (
        f"x|{KEY}|api|fe|127.0.0.1:1",
        f"A|{KEY}|api|fe|127.0.0.1:1",
        f"a|a|{KEY}|api|fe|127.0.0.1:1",
    ):
        assert parse_tracked(bad) is None, bad
