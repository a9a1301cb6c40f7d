"""SQL for machine identities: Agents, AgenticApplications and the links between them and
their owners (draft-abbey-scim-agent-extension-00, draft-wzdk-scim-agent-resource-00).

Does: insert, read, update and delete agent and application rows; uniqueness of
``agentUserName`` (the unique index decides); the link rows (owners, an application's
agents) and their reverse lookups (the agents a user or group owns, for the owner cascade);
pages of rows for a compiled filter.
Does not: SCIM rules (callers pass canonical resources), decide whether an owner may be
referenced or what a suspended agent gets (``app.agents``), render SCIM JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.scim import errors
from scimgate.store import tables
from scimgate.store.db import now_iso
from scimgate.store.resources import count_and_page, new_id, touch_groups

A, P, L = tables.agents, tables.agentic_applications, tables.agent_links
U, G, M = tables.users, tables.groups, tables.members

OWNER = "owner"
APPLICATION = "application"
PARENT = "parent"  # other = the parent Agent's id (abbey-00 ``parent``), kind = "Agent"
# Keys of a canonical resource that live in columns, in link rows or are computed.
# (An application's ``agents`` stay in ``attrs`` too, for the displays the client sent; the
# link rows say which agents it has.)
_NOT_IN_ATTRS = frozenset({"id", "meta", "schemas", "groups", "applications"})


@dataclass(frozen=True)
class AgentRow:
    id: str
    name: str
    active: bool
    attrs: dict[str, Any]
    version: int
    created: str
    last_modified: str


@dataclass(frozen=True)
class ApplicationRow:
    id: str
    name: str
    active: bool
    attrs: dict[str, Any]
    version: int
    created: str
    last_modified: str


def _attrs(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in _NOT_IN_ATTRS}


def _agent(r: Any) -> AgentRow:
    return AgentRow(
        r.id, r.name, bool(r.active), dict(r.attrs), r.version, r.created, r.last_modified
    )


def _application(r: Any) -> ApplicationRow:
    return ApplicationRow(
        r.id, r.name, bool(r.active), dict(r.attrs), r.version, r.created, r.last_modified
    )


# --- agents ------------------------------------------------------------------------------


def agent_name(resource: dict[str, Any]) -> str:
    """abbey-00's ``name``, else wzdk-00's ``agentUserName`` (the service checks one exists)."""
    return str(resource.get("name") or resource.get("agentUserName") or "")


def _agent_values(resource: dict[str, Any]) -> dict[str, Any]:
    name = agent_name(resource)
    user_name = resource.get("agentUserName")
    return {
        "name": name,
        "name_lower": name.lower(),
        "agent_user_name": user_name,
        "agent_user_name_lower": user_name.lower() if user_name else None,
        "subject": resource.get("subject"),
        "external_id": resource.get("externalId"),
        "active": bool(resource.get("active", True)),
        "display_name": resource.get("displayName"),
        "attrs": _attrs(resource),
    }


def _unique_agent_user_name(conn: Connection, lowered: str | None, exclude: str | None) -> None:
    if lowered is None:
        return
    q = sa.select(A.c.id).where(A.c.agent_user_name_lower == lowered)
    if exclude is not None:
        q = q.where(A.c.id != exclude)
    if conn.execute(q).first() is not None:
        raise errors.Uniqueness(f"agentUserName {lowered!r} is already taken")


def insert_agent(conn: Connection, resource: dict[str, Any]) -> AgentRow:
    values = _agent_values(resource)
    _unique_agent_user_name(conn, values["agent_user_name_lower"], None)
    now = now_iso()
    row = {"id": new_id(), **values, "version": 1, "created": now, "last_modified": now}
    conn.execute(A.insert().values(**row))
    return AgentRow(row["id"], values["name"], values["active"], values["attrs"], 1, now, now)


def find_agent(conn: Connection, agent_id: str) -> AgentRow | None:
    r = conn.execute(sa.select(A).where(A.c.id == agent_id)).first()
    return _agent(r) if r is not None else None


def get_agent(conn: Connection, agent_id: str) -> AgentRow:
    row = find_agent(conn, agent_id)
    if row is None:
        raise errors.NotFound(f"Agent {agent_id} not found")
    return row


def update_agent(conn: Connection, row: AgentRow, resource: dict[str, Any]) -> AgentRow:
    values = _agent_values(resource)
    _unique_agent_user_name(conn, values["agent_user_name_lower"], row.id)
    version, now = row.version + 1, now_iso()
    conn.execute(
        A.update().where(A.c.id == row.id).values(**values, version=version, last_modified=now)
    )
    return AgentRow(
        row.id, values["name"], values["active"], values["attrs"], version, row.created, now
    )


def delete_agent(conn: Connection, agent_id: str) -> tuple[list[str], list[str]]:
    """Delete an agent, its memberships and links; returns (group ids, application ids) it
    was linked to (their versions move: their members / agents changed)."""
    group_ids = [
        r[0] for r in conn.execute(sa.select(M.c.group_id).where(M.c.member_id == agent_id))
    ]
    conn.execute(M.delete().where(M.c.member_id == agent_id))
    touch_groups(conn, group_ids)
    app_ids = [
        r[0]
        for r in conn.execute(
            sa.select(L.c.other_id).where(L.c.agent_id == agent_id, L.c.relation == APPLICATION)
        )
    ]
    conn.execute(L.delete().where(L.c.agent_id == agent_id))
    touch_applications(conn, app_ids)
    conn.execute(A.delete().where(A.c.id == agent_id))
    return group_ids, app_ids


def page_agents(
    conn: Connection, where: Any, order: Any | None, offset: int, limit: int
) -> tuple[int, list[AgentRow]]:
    total, rows = count_and_page(conn, A, where, order, offset, limit)
    return total, [_agent(r) for r in rows]


def all_agents(conn: Connection) -> Iterator[AgentRow]:
    for r in conn.execute(sa.select(A).order_by(A.c.id)):
        yield _agent(r)


def agent_names(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    q = sa.select(A.c.id, A.c.name).where(A.c.id.in_(list(ids)))
    return {r[0]: r[1] for r in conn.execute(q)}


# --- links -------------------------------------------------------------------------------


def set_links(conn: Connection, agent_id: str, relation: str, links: dict[str, str]) -> None:
    """Make the agent's links of ``relation`` exactly ``links`` (other id -> kind)."""
    conn.execute(L.delete().where(L.c.agent_id == agent_id, L.c.relation == relation))
    if links:
        conn.execute(
            L.insert(),
            [
                {"agent_id": agent_id, "other_id": o, "relation": relation, "kind": k}
                for o, k in links.items()
            ],
        )


def set_application_agents(conn: Connection, app_id: str, links: dict[str, str]) -> list[str]:
    """Make the application's agents exactly ``links`` (agent id -> kind); returns the agent
    ids whose links changed (their ``applications`` and client-id identities move)."""
    before = application_agents(conn, app_id)
    conn.execute(L.delete().where(L.c.other_id == app_id, L.c.relation == APPLICATION))
    if links:
        conn.execute(
            L.insert(),
            [
                {"agent_id": a, "other_id": app_id, "relation": APPLICATION, "kind": k}
                for a, k in links.items()
            ],
        )
    changed = {a for a in set(before) | set(links) if before.get(a) != links.get(a)}
    return sorted(changed)


def owners_of(conn: Connection, agent_id: str) -> dict[str, str]:
    q = sa.select(L.c.other_id, L.c.kind).where(L.c.agent_id == agent_id, L.c.relation == OWNER)
    return {r[0]: r[1] for r in conn.execute(q)}


def parent_of(conn: Connection, agent_id: str) -> str | None:
    """The id the agent names as its parent (kept when that agent is deleted)."""
    q = sa.select(L.c.other_id).where(L.c.agent_id == agent_id, L.c.relation == PARENT)
    row = conn.execute(q).first()
    return str(row[0]) if row is not None else None


def children_of(conn: Connection, parent_ids: Iterable[str]) -> list[str]:
    """The agents that name any of these agents as their parent (one index range each)."""
    return _agents_linking(conn, parent_ids, PARENT)


def agents_owned_by(conn: Connection, owner_ids: Iterable[str]) -> list[str]:
    """The agents that name any of these users or groups as an owner (the owner cascade)."""
    return _agents_linking(conn, owner_ids, OWNER)


def _agents_linking(conn: Connection, other_ids: Iterable[str], relation: str) -> list[str]:
    """The agents with a ``relation`` link to any of ``other_ids``, in id order."""
    ids = list(dict.fromkeys(other_ids))
    if not ids:
        return []
    q = (
        sa.select(L.c.agent_id)
        .where(L.c.other_id.in_(ids), L.c.relation == relation)
        .distinct()
        .order_by(L.c.agent_id)
    )
    return [r[0] for r in conn.execute(q)]


def live_owners(conn: Connection, owners: dict[str, str]) -> list[str]:
    """Which of these owners still stand: an active user, or an existing group."""
    if not owners:
        return []
    ids = list(owners)
    live = [r[0] for r in conn.execute(sa.select(U.c.id).where(U.c.id.in_(ids), U.c.active))]
    live += [r[0] for r in conn.execute(sa.select(G.c.id).where(G.c.id.in_(ids)))]
    return sorted(live)


def application_agents(conn: Connection, app_id: str) -> dict[str, str]:
    q = sa.select(L.c.agent_id, L.c.kind).where(L.c.other_id == app_id, L.c.relation == APPLICATION)
    return {r[0]: r[1] for r in conn.execute(q)}


def applications_of(conn: Connection, agent_id: str) -> list[tuple[str, str, str]]:
    """The applications linked to an agent: [(application id, name, kind)]."""
    q = (
        sa.select(P.c.id, P.c.name, L.c.kind)
        .select_from(L.join(P, P.c.id == L.c.other_id))
        .where(L.c.agent_id == agent_id, L.c.relation == APPLICATION)
        .order_by(P.c.name, P.c.id)
    )
    return [(r[0], r[1], r[2]) for r in conn.execute(q)]


def groups_of_member(conn: Connection, member_id: str) -> list[tuple[str, str]]:
    q = (
        sa.select(G.c.id, G.c.display_name)
        .select_from(M.join(G, G.c.id == M.c.group_id))
        .where(M.c.member_id == member_id)
        .order_by(G.c.display_name)
    )
    return [(r[0], r[1]) for r in conn.execute(q)]


def existing_owner_types(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    """Which of these ids are users or groups (an owner must be one of them)."""
    if not ids:
        return {}
    found = {r[0]: "User" for r in conn.execute(sa.select(U.c.id).where(U.c.id.in_(list(ids))))}
    found.update(
        {r[0]: "Group" for r in conn.execute(sa.select(G.c.id).where(G.c.id.in_(list(ids))))}
    )
    return found


def existing_agents(conn: Connection, ids: Sequence[str]) -> set[str]:
    if not ids:
        return set()
    return {r[0] for r in conn.execute(sa.select(A.c.id).where(A.c.id.in_(list(ids))))}


# --- applications ------------------------------------------------------------------------


def _application_values(resource: dict[str, Any]) -> dict[str, Any]:
    name = str(resource["name"])
    return {
        "name": name,
        "name_lower": name.lower(),
        "external_id": resource.get("externalId"),
        "active": bool(resource.get("active", True)),
        "display_name": resource.get("displayName"),
        "attrs": _attrs(resource),
    }


def insert_application(conn: Connection, resource: dict[str, Any]) -> ApplicationRow:
    values = _application_values(resource)
    now = now_iso()
    row = {"id": new_id(), **values, "version": 1, "created": now, "last_modified": now}
    conn.execute(P.insert().values(**row))
    return ApplicationRow(row["id"], values["name"], values["active"], values["attrs"], 1, now, now)


def find_application(conn: Connection, app_id: str) -> ApplicationRow | None:
    r = conn.execute(sa.select(P).where(P.c.id == app_id)).first()
    return _application(r) if r is not None else None


def get_application(conn: Connection, app_id: str) -> ApplicationRow:
    row = find_application(conn, app_id)
    if row is None:
        raise errors.NotFound(f"AgenticApplication {app_id} not found")
    return row


def update_application(
    conn: Connection, row: ApplicationRow, resource: dict[str, Any] | None
) -> ApplicationRow:
    """Store new attributes (or only bump version/lastModified when resource is None)."""
    version, now = row.version + 1, now_iso()
    values = _application_values(resource) if resource is not None else {}
    conn.execute(
        P.update().where(P.c.id == row.id).values(**values, version=version, last_modified=now)
    )
    if resource is None:
        return ApplicationRow(row.id, row.name, row.active, row.attrs, version, row.created, now)
    return ApplicationRow(
        row.id, values["name"], values["active"], values["attrs"], version, row.created, now
    )


def touch_applications(conn: Connection, app_ids: Iterable[str]) -> None:
    ids = list(app_ids)
    if ids:
        conn.execute(
            P.update()
            .where(P.c.id.in_(ids))
            .values(version=P.c.version + 1, last_modified=now_iso())
        )


def delete_application(conn: Connection, app_id: str) -> list[str]:
    """Delete an application and its links; returns the ids of the agents it linked."""
    agent_ids = list(application_agents(conn, app_id))
    conn.execute(L.delete().where(L.c.other_id == app_id, L.c.relation == APPLICATION))
    conn.execute(P.delete().where(P.c.id == app_id))
    return agent_ids


def page_applications(
    conn: Connection, where: Any, order: Any | None, offset: int, limit: int
) -> tuple[int, list[ApplicationRow]]:
    total, rows = count_and_page(conn, P, where, order, offset, limit)
    return total, [_application(r) for r in rows]


def client_ids_of_agent(conn: Connection, agent_id: str) -> list[str]:
    """The OAuth client ids of the active applications that own this agent
    (``oAuthConfiguration.clientId``, abbey-00 §4): an Okta ``cid`` / Entra ``azp``."""
    q = (
        sa.select(P.c.attrs)
        .select_from(L.join(P, P.c.id == L.c.other_id))
        .where(
            L.c.agent_id == agent_id, L.c.relation == APPLICATION, L.c.kind == "owned", P.c.active
        )
        .order_by(P.c.id)
    )
    out: list[str] = []
    for (attrs,) in conn.execute(q):
        for conf in dict(attrs).get("oAuthConfiguration") or []:
            client_id = conf.get("clientId") if isinstance(conf, dict) else None
            if isinstance(client_id, str) and client_id not in out:
                out.append(client_id)
    return out
