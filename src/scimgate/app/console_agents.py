"""What the admin console shows of agents, as use cases: the agents beside the people
(search by name, agentUserName, id, subject or externalId), and one agent's page: its
state (active, inactive, or suspended because its owners or its parent are out), owners,
parent, groups,
applications, the routes the policy opens to it (and why), its identity keys in the HAProxy
maps and its story from the audit trail.

Does: open the reads (``store.console_reads``, ``store.agents``, ``audit.story``) and join
them with the policy (``audit.report``: the same rows as ``scimgate report access``).
Does not: HTML, HTTP or sessions (``scimgate.console``); SQL text (``store``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scimgate.app.agents import is_suspended
from scimgate.app.console_views import PAGE, Grant, summarise_story
from scimgate.audit.replay import AgentState, DirectoryState, GroupState
from scimgate.audit.report import access_rows
from scimgate.audit.story import user_story
from scimgate.policy.model import Policy
from scimgate.store import agents as st, console_reads as reads
from scimgate.store.db import Database


@dataclass(frozen=True)
class AgentListing:
    row: reads.AgentListRow
    state: str  # "active", "inactive" or "suspended"


def agents(db: Database, query: str, after: str) -> tuple[list[AgentListing], tuple[int, int]]:
    """A page of agents matching ``query`` with their state, and (agents, active agents)."""
    with db.read() as conn:
        rows = reads.page_agents(conn, query, after, PAGE)
        listed = [AgentListing(r, _state(r.active, is_suspended(conn, r.id))) for r in rows]
        return listed, reads.count_agents(conn)


def _state(active: bool, suspended: bool) -> str:
    if not active:
        return "inactive"
    return "suspended" if suspended else "active"


@dataclass(frozen=True)
class Owner:
    id: str
    kind: str  # "User" or "Group"
    name: str  # userName or displayName; "" when the owner is gone
    stands: bool  # an active user or an existing group


@dataclass
class AgentView:
    agent: st.AgentRow
    state: str
    owners: list[Owner]
    #: (id, name, stands) of the parent agent; name "" when it is gone
    parent: tuple[str, str, bool] | None
    groups: list[tuple[str, str, str | None]]
    applications: list[tuple[str, str, str]]
    grants: list[Grant]
    map_entries: int
    story: list[dict[str, Any]]


def agent_view(
    db: Database, policy: Policy | None, agent_id: str, *, story: bool = True
) -> AgentView | None:
    """One agent now (None: no agent has this id)."""
    with db.read() as conn:
        row = st.find_agent(conn, agent_id)
        if row is None:
            return None
        links = st.owners_of(conn, agent_id)
        live = set(st.live_owners(conn, links))
        owners = [
            Owner(oid, kind, _owner_name(conn, oid, kind), oid in live)
            for oid, kind in sorted(links.items())
        ]
        groups = reads.groups_of(conn, agent_id)
        apps = st.applications_of(conn, agent_id)
        entries = reads.map_entry_count(conn, agent_id)
        timeline = (user_story(conn, agent_id) or {}).get("timeline", []) if story else []
        suspended = is_suspended(conn, agent_id)
        parent = st.parent_of(conn, agent_id)
        parent_row = st.find_agent(conn, parent) if parent else None
        parent_stands = parent_row is not None and parent_row.active
        if parent_stands and parent is not None:
            parent_stands = not is_suspended(conn, parent)
    summarise_story(timeline)
    grants: list[Grant] = []
    if policy is not None and not suspended:
        # standing is decided above (owners and parents): the rows need only its groups
        kind = row.attrs.get("agentType")
        state = DirectoryState(
            agents={
                row.id: AgentState(row.name, row.active, kind if isinstance(kind, str) else None)
            }
        )
        for gid, name, ext in groups:
            state.groups[gid] = GroupState(name, ext, {row.id})
        grants = [
            Grant(r.route, r.path_prefix, r.via, r.requires_scopes)
            for r in access_rows(state, policy)
            if r.kind == "agent"
        ]
    return AgentView(
        row,
        _state(row.active, suspended),
        owners,
        (parent, parent_row.name if parent_row else "", parent_stands) if parent else None,
        groups,
        apps,
        grants,
        entries,
        timeline,
    )


def _owner_name(conn: Any, owner_id: str, kind: str) -> str:
    if kind == "User":
        person = reads.person(conn, owner_id)
        return person.user_name if person is not None else ""
    group = reads.group(conn, owner_id)
    return group.display_name if group is not None else ""
