"""The access review's rows (pure): people through allow_groups, agents through allow_agents
(policy group, agentType, any), none for an inactive or suspended agent (owners gone, or a
parent up the line out, or a cycle: fail closed), open routes as such; and the trail replay
of agent writes."""

from __future__ import annotations

from typing import Any

from scimgate.audit.replay import AgentState, DirectoryState, GroupState, UserState, replay
from scimgate.audit.report import access_rows, render
from scimgate.policy.jwtmint import demo_policy_yaml
from scimgate.policy.model import Policy, parse_policy

EXTRA = """\
  - name: tools
    from: {hosts: ["*"], path_prefix: /tools}
    allow_agents: {types: [helper]}
    to: {return: "tools"}
  - name: bots
    from: {hosts: ["*"], path_prefix: /bots}
    allow_agents: {groups: [any]}
    to: {return: "bots"}
  - name: lan
    from: {hosts: ["*"], path_prefix: /lan}
    allow_sources: [10.0.0.0/8]
    to: {return: "lan"}
"""


def _policy() -> Policy:
    text = demo_policy_yaml(agents=True).replace("  - name: admin\n", EXTRA + "  - name: admin\n")
    return parse_policy(text, "policy.yaml", base_dir="/nonexistent")


def _rows(state: DirectoryState, policy: Policy) -> set[tuple[str, str, str, str]]:
    return {(r.route, r.kind, r.user_name, r.via) for r in access_rows(state, policy)}


def _state() -> DirectoryState:
    return DirectoryState(
        users={"u1": UserState("ann@x"), "u2": UserState("bob@x", active=False)},
        groups={"g1": GroupState("Automation", None, {"a1"})},
        agents={
            "a1": AgentState("grouped"),
            "a2": AgentState("helper", agent_type="Helper", owners={"u1"}),
            "a3": AgentState("orphan", owners={"u2", "gone"}),  # no owner stands
            "a4": AgentState("child", parent="a3"),  # its parent is suspended
            "a5": AgentState("loop1", parent="a6"),
            "a6": AgentState("loop2", parent="a5"),  # a cycle (refused at write): out
            "a7": AgentState("idle", active=False),
            "a8": AgentState("kid", parent="a2"),  # its parent stands
        },
    )


def test_rows_by_kind() -> None:
    rows = _rows(_state(), _policy())
    agents = {r for r in rows if r[1] == "agent"}
    assert agents == {
        ("api", "agent", "grouped", "Automation → automation"),
        ("bots", "agent", "grouped", "any active agent"),
        ("bots", "agent", "helper", "any active agent"),
        ("bots", "agent", "kid", "any active agent"),
        ("tools", "agent", "helper", "agentType Helper → at-helper"),
    }
    assert ("health", "public", "anyone", "public: true") in rows
    assert ("lan", "sources", "from 10.0.0.0/8", "allow_sources") in rows
    assert ("home", "user", "ann@x", "any active user") in rows
    assert not any(r[2] == "bob@x" for r in rows)


def test_suspension_follows_owners_and_the_parent_line() -> None:
    state = _state()
    assert [state.suspended(a) for a in ("a1", "a2", "a3", "a4", "a5", "a8")] == [
        False, False, True, True, True, False,
    ]  # fmt: skip
    state.agents["a2"].active = False  # a parent deactivated: its child is out
    assert state.suspended("a8")
    del state.agents["a2"]  # ... and deleted: still out (it still names it)
    assert state.suspended("a8")


def test_render_formats_carry_the_kind() -> None:
    rows = access_rows(_state(), _policy())
    csv_head = render(rows, "csv").splitlines()[0]
    assert csv_head == "route,path_prefix,kind,user_id,user_name,via,requires_scopes"
    assert render(rows, "md").splitlines()[0] == "| route | path | kind | who | via | scopes |"


def _ev(rtype: str, rid: str, op: str, detail: dict[str, Any], ts: str) -> dict[str, Any]:
    return {"kind": "scim.write", "resource_type": rtype, "resource_id": rid, "operation": op,
            "detail": detail, "ts": ts}  # fmt: skip


def test_replay_of_agent_writes() -> None:
    events = [
        _ev("User", "u1", "create", {"resource": {"userName": "ann@x"}}, "1"),
        _ev(
            "Agent",
            "a1",
            "create",
            {"resource": {"name": "one", "agentType": "helper", "owners": [{"value": "u1"}]}},
            "2",
        ),
        _ev("Agent", "a2", "create", {"resource": {"name": "two", "parent": {"value": "a1"}}}, "3"),
        _ev(
            "Agent",
            "a1",
            "patch",
            {"changed": {"name": ["one", "uno"], "active": [True, False]}},
            "4",
        ),
        _ev("Agent", "a2", "patch", {"changed": {"parent": [{"value": "a1"}, None]}}, "5"),
        _ev("Group", "g", "create", {"resource": {"displayName": "G", "members": ["a2"]}}, "6"),
        _ev("Agent", "a2", "delete", {}, "7"),
    ]
    at3 = replay(events, until="3")
    assert at3.agents["a1"] == AgentState("one", True, "helper", {"u1"})
    assert at3.agents["a2"].parent == "a1" and not at3.suspended("a2")
    at4 = replay(events, until="4")
    assert at4.agents["a1"].name == "uno" and at4.suspended("a2")  # its parent went inactive
    at6 = replay(events, until="6")
    assert at6.agents["a2"].parent is None and not at6.suspended("a2")
    assert at6.groups_of("a2")[0].display_name == "G"
    end = replay(events)
    assert "a2" not in end.agents and end.groups["g"].members == set()
