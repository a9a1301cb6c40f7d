"""Directory state rebuilt from the audit trail (pure): who existed, who was active, who was in
which group, at any past moment; the agents too (their type, owners and groups). This is what
`report access --at T` and `audit user` read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UserState:
    user_name: str
    active: bool = True
    emails: list[str] = field(default_factory=list)


@dataclass
class GroupState:
    display_name: str
    external_id: str | None = None
    members: set[str] = field(default_factory=set)


@dataclass
class AgentState:
    name: str
    active: bool = True
    agent_type: str | None = None
    #: owner ids (users or groups); a deleted owner stays named (the agent stays suspended)
    owners: set[str] = field(default_factory=set)
    #: the parent agent's id; a deleted parent stays named (the agent stays suspended)
    parent: str | None = None


@dataclass
class DirectoryState:
    users: dict[str, UserState] = field(default_factory=dict)
    groups: dict[str, GroupState] = field(default_factory=dict)
    agents: dict[str, AgentState] = field(default_factory=dict)

    def groups_of(self, user_id: str) -> list[GroupState]:
        return [g for g in self.groups.values() if user_id in g.members]

    def suspended(self, agent_id: str) -> bool:
        """As ``app.agents.is_suspended``: it names owners and none stands (an active user
        or an existing group), or its parent, up the chain, is inactive, suspended or gone."""
        seen: set[str] = set()
        current = agent_id
        while True:
            owners = self.agents[current].owners
            standing = [
                o for o in owners if o in self.groups or (o in self.users and self.users[o].active)
            ]
            if owners and not standing:
                return True
            seen.add(current)
            parent = self.agents[current].parent
            if parent is None:
                return False
            if parent not in self.agents or not self.agents[parent].active or parent in seen:
                return True
            current = parent


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value) if value is not None else True


def _emails(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [e["value"] for e in value if isinstance(e, dict) and isinstance(e.get("value"), str)]


def _owner_ids(value: Any) -> set[str]:
    if not isinstance(value, list):
        return set()
    return {str(o["value"]) for o in value if isinstance(o, dict) and o.get("value")}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _parent_id(value: Any) -> str | None:
    return str(value["value"]) if isinstance(value, dict) and value.get("value") else None


def _apply_agent(state: DirectoryState, rid: str, op: Any, detail: dict[str, Any]) -> None:
    if op == "create":
        res = detail.get("resource", {})
        state.agents[rid] = AgentState(
            str(res.get("name") or res.get("agentUserName") or ""),
            _bool(res.get("active", True)),
            _text(res.get("agentType")),
            _owner_ids(res.get("owners")),
            _parent_id(res.get("parent")),
        )
    elif op in ("replace", "patch") and rid in state.agents:
        agent = state.agents[rid]
        changed = detail.get("changed", {})
        if "name" in changed:
            agent.name = str(changed["name"][1] or "")
        if "active" in changed:
            agent.active = _bool(changed["active"][1])
        if "agentType" in changed:
            agent.agent_type = _text(changed["agentType"][1])
        if "owners" in changed:
            agent.owners = _owner_ids(changed["owners"][1])
        if "parent" in changed:
            agent.parent = _parent_id(changed["parent"][1])
    elif op == "delete":
        state.agents.pop(rid, None)
        for g in state.groups.values():
            g.members.discard(rid)


def apply_event(state: DirectoryState, ev: dict[str, Any]) -> None:
    """Apply one `scim.write` event to the state (other kinds are ignored)."""
    if ev.get("kind") != "scim.write":
        return
    rid, op, detail = ev.get("resource_id"), ev.get("operation"), ev.get("detail") or {}
    if not rid:
        return
    if ev.get("resource_type") == "User":
        if op == "create":
            res = detail.get("resource", {})
            state.users[rid] = UserState(
                res.get("userName", ""), _bool(res.get("active", True)), _emails(res.get("emails"))
            )
        elif op in ("replace", "patch") and rid in state.users:
            user = state.users[rid]
            changed = detail.get("changed", {})
            if "userName" in changed:
                user.user_name = changed["userName"][1]
            if "active" in changed:
                user.active = _bool(changed["active"][1])
            if "emails" in changed:
                user.emails = _emails(changed["emails"][1])
        elif op == "delete":
            state.users.pop(rid, None)
            for g in state.groups.values():
                g.members.discard(rid)
    elif ev.get("resource_type") == "Agent":
        _apply_agent(state, rid, op, detail)
    elif ev.get("resource_type") == "Group":
        if op == "create":
            res = detail.get("resource", {})
            state.groups[rid] = GroupState(
                res.get("displayName", ""), res.get("externalId"), set(res.get("members") or [])
            )
        elif op in ("replace", "patch") and rid in state.groups:
            group = state.groups[rid]
            changed = detail.get("changed", {})
            if "displayName" in changed:
                group.display_name = changed["displayName"][1]
            if "externalId" in changed:
                group.external_id = changed["externalId"][1]
            group.members |= set(detail.get("members_added") or [])
            group.members -= set(detail.get("members_removed") or [])
        elif op == "delete":
            state.groups.pop(rid, None)


def replay(events: Iterable[dict[str, Any]], until: str | None = None) -> DirectoryState:
    """The directory as the audit trail says it was at ``until`` (ISO time; None = now)."""
    state = DirectoryState()
    for ev in events:
        if until is not None and ev["ts"] > until:
            break
        apply_event(state, ev)
    return state
