"""Agents and AgenticApplications as SCIM resources, and the owner cascade.

Does: the writes and reads of ``/Agents`` and ``/AgenticApplications`` in one transaction
each (as ``app.service`` does for Users and Groups, which delegates here): both drafts'
identifiers (abbey-00 ``name``, wzdk-00 ``agentUserName``: at least one), owners that must
exist, an application's agents that must exist, ETags, the audit event of every write, the
agents' map entries (``app.enforcement``); the owner cascade: when an owner is deactivated,
reactivated or deleted, the agents it owns are recomputed (suspended / restored) and the
cascade is audited with the owner and the agents named.
Does not: parse HTTP, define SCIM rules (``scim``), write SQL (``store.agents``), or decide
the entry grammar (``policy.agents``).

Choices where the drafts are silent:

* ``name`` is required (abbey-00); a wzdk-00 body with only ``agentUserName`` takes it as
  its ``name`` too.
* An application's ``agents[].display`` is kept as the client sent it (the agent's name
  when it sent none); an agent deleted since is left out.
* An agent is *suspended* when it names owners and none of them stands (an active user or
  an existing group); an agent without owners is not suspended. A deleted owner's link row
  is kept, so the agent stays suspended until the IdP names a new owner; an owner the agent
  already names may be sent back (Okta's PUT echoes the whole resource) even when it is
  gone, any new owner must exist (400 ``invalidValue``).
* An application's ``agents`` must exist (400); an application's OAuth ``clientId`` is an
  identity of the agents it *owns* (``type: owned``), while the application is active.
* ``parent`` (abbey-00 §3.1; its ``$ref`` is an Agent) must name an existing Agent (400
  ``invalidValue``), not the agent itself and not one of its descendants (no cycle: 400
  ``invalidValue``); a parent the agent already names may be sent back even when deleted
  (as owners). ``display`` is filled with the parent's name when the client sends none.
* An agent is also *suspended* while its parent is inactive, suspended or deleted (as an
  Entra Agent ID blueprint's agent identities stop with it): a child never outlives the
  standing of the agent that spawned it. A deleted parent's link is kept, so the child
  stays suspended until the IdP names another parent or removes it. Every write that can
  change an agent's standing (its ``active``, owners or parent; its deletion; an owner
  cascade) recomputes its descendants in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from scimgate.audit import log as audit
from scimgate.scim import errors
from scimgate.scim.etag import check_if_match
from scimgate.scim.patch import apply_patch
from scimgate.scim.render_agents import agent_resource, application_resource
from scimgate.scim.resource import normalise
from scimgate.scim.schema import (
    AGENT_SCHEMA,
    AGENT_TYPE,
    AGENTIC_APPLICATION_TYPE,
    ResourceType,
)
from scimgate.store import agents as st
from scimgate.store.outbox import MapChange

# (connection, identity ids) -> the map changes of recomputing their entries
Refresh = Callable[[Connection, Sequence[str]], list[MapChange]]
# (connection, rtype, id, operation, detail, changes): the audit event of one write
AuditWrite = Callable[
    [Connection, audit.Actor, ResourceType, str, str, dict[str, Any], list[MapChange]], None
]


def load_agent(conn: Connection, agent_id: str, base_url: str) -> dict[str, Any]:
    row = st.get_agent(conn, agent_id)
    return agent_resource(
        row, base_url, st.groups_of_member(conn, agent_id), st.applications_of(conn, agent_id)
    )


def load_application(conn: Connection, app_id: str, base_url: str) -> dict[str, Any]:
    row = st.get_application(conn, app_id)
    agents = st.application_agents(conn, app_id)
    names = st.agent_names(conn, list(agents))
    sent = {
        str(a.get("value")): a["display"]
        for a in row.attrs.get("agents") or []
        if isinstance(a, dict) and isinstance(a.get("display"), str)
    }
    order = [str(a.get("value")) for a in row.attrs.get("agents") or [] if isinstance(a, dict)]
    ids = [a for a in order if a in agents] + sorted(a for a in agents if a not in order)
    return application_resource(
        row, base_url, [(a, sent.get(a) or names.get(a, ""), agents[a]) for a in ids]
    )


def with_default_name(body: Any) -> Any:
    """abbey-00 §3.1 requires ``name``; wzdk-00 §2 has ``agentUserName`` instead: a body with
    only the latter gets it as its ``name`` too (keys matched as ``normalise`` matches them:
    any case, optionally URN-qualified)."""
    if not isinstance(body, dict):
        return body
    prefix = AGENT_SCHEMA.lower() + ":"
    names = {k.lower().removeprefix(prefix): k for k in body if isinstance(k, str)}
    user_name = body.get(names["agentusername"]) if "agentusername" in names else None
    if "name" in names or not isinstance(user_name, str):
        return body
    return {**body, "name": user_name}


def _owner_links(
    conn: Connection, resource: dict[str, Any], current: dict[str, str]
) -> dict[str, str]:
    """The owners a canonical Agent names (id -> User/Group), each checked to exist unless
    the agent already names it; ``type`` is filled in from what the id is."""
    owners = resource.get("owners") or []
    ids = [str(o["value"]) for o in owners if o.get("value")]
    if len(ids) != len(owners):
        raise errors.InvalidValue(
            "attribute 'owners': each owner needs a value (a User or Group id)"
        )
    found = st.existing_owner_types(conn, ids)
    links: dict[str, str] = {}
    for owner in owners:
        oid = str(owner["value"])
        kind = found.get(oid) or current.get(oid)
        if kind is None:
            raise errors.InvalidValue(f"attribute 'owners': no User or Group has id {oid!r}")
        given = owner.get("type")
        if given is not None and str(given).lower() != kind.lower():
            raise errors.InvalidValue(f"attribute 'owners': {oid!r} is a {kind}, not {given!r}")
        owner["type"] = kind
        links[oid] = kind
    return links


def _parent_link(
    conn: Connection, resource: dict[str, Any], agent_id: str | None, current: str | None
) -> str | None:
    """The parent a canonical Agent names (checked: see the module docstring), or None."""
    parent = resource.get("parent")
    if not parent:
        return None
    pid = parent.get("value")
    if not pid:
        raise errors.InvalidValue("attribute 'parent': needs a value (an Agent id)")
    pid = str(pid)
    if pid == agent_id:
        raise errors.InvalidValue("attribute 'parent': an agent cannot be its own parent")
    row = st.find_agent(conn, pid)
    if row is None and pid != current:
        raise errors.InvalidValue(f"attribute 'parent': no Agent has id {pid!r}")
    # No cycle: walking up from the new parent must not reach this agent (every stored
    # chain is acyclic, so the walk ends; ``seen`` bounds it all the same).
    seen: set[str] = set()
    ancestor: str | None = pid
    while agent_id is not None and ancestor is not None and ancestor not in seen:
        if ancestor == agent_id:
            raise errors.InvalidValue(
                f"attribute 'parent': {pid!r} descends from this agent (a cycle)"
            )
        seen.add(ancestor)
        ancestor = st.parent_of(conn, ancestor)
    if row is not None and not parent.get("display"):
        parent["display"] = row.name
    parent.pop("$ref", None)  # rendered from the id (scim.render_agents)
    return pid


def descendants(conn: Connection, agent_ids: Sequence[str]) -> list[str]:
    """Every agent below these ones through ``parent``, breadth first, each once."""
    seen = set(agent_ids)
    out: list[str] = []
    level = list(agent_ids)
    while level:
        level = [c for c in st.children_of(conn, level) if c not in seen]
        seen.update(level)
        out += level
    return out


def _set_parent(conn: Connection, agent_id: str, parent_id: str | None) -> None:
    st.set_links(conn, agent_id, st.PARENT, {parent_id: "Agent"} if parent_id else {})


def _agent_links(conn: Connection, resource: dict[str, Any]) -> dict[str, str]:
    """An application's agents (agent id -> owned/authorized/guest), each checked to exist."""
    agents = resource.get("agents") or []
    links: dict[str, str] = {}
    for agent in agents:
        if not agent.get("value"):
            raise errors.InvalidValue("attribute 'agents': each agent needs a value (an Agent id)")
        kind = str(agent.get("type") or "owned")
        if kind not in ("owned", "authorized", "guest"):
            raise errors.InvalidValue("attribute 'agents.type': owned, authorized or guest")
        links[str(agent["value"])] = kind
    missing = sorted(set(links) - st.existing_agents(conn, list(links)))
    if missing:
        raise errors.InvalidValue(f"attribute 'agents': no Agent has id {missing[0]!r}")
    return links


def _for_patch(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("meta", "groups", "applications")}


class AgentWrites:
    """The write use cases of both agent resource types, in the caller's transaction."""

    def __init__(self, refresh: Refresh, audit_write: AuditWrite) -> None:
        self.refresh = refresh
        self.audit_write = audit_write

    # --- Agents --------------------------------------------------------------------------

    def create_agent(
        self, conn: Connection, body: Any, actor: audit.Actor, base: str
    ) -> tuple[dict[str, Any], list[MapChange]]:
        resource = normalise(with_default_name(body), AGENT_TYPE, mode="create")
        links = _owner_links(conn, resource, {})
        parent = _parent_link(conn, resource, None, None)
        row = st.insert_agent(conn, resource)
        st.set_links(conn, row.id, st.OWNER, links)
        _set_parent(conn, row.id, parent)
        changes = self.refresh(conn, [row.id])
        out = load_agent(conn, row.id, base)
        self.audit_write(
            conn, actor, AGENT_TYPE, row.id, "create", {"resource": _view(out)}, changes
        )
        return out, changes

    def _store_agent(
        self,
        conn: Connection,
        rid: str,
        resource: dict[str, Any],
        actor: audit.Actor,
        base: str,
        operation: str,
        before: dict[str, Any],
    ) -> tuple[dict[str, Any], list[MapChange]]:
        links = _owner_links(conn, resource, st.owners_of(conn, rid))
        parent = _parent_link(conn, resource, rid, st.parent_of(conn, rid))
        row = st.get_agent(conn, rid)
        st.update_agent(conn, row, resource)
        st.set_links(conn, rid, st.OWNER, links)
        _set_parent(conn, rid, parent)
        # its descendants stand or fall with it
        changes = self.refresh(conn, [rid, *descendants(conn, [rid])])
        out = load_agent(conn, rid, base)
        self.audit_write(
            conn, actor, AGENT_TYPE, rid, operation, {"changed": _diff(before, out)}, changes
        )
        return out, changes

    def replace_agent(
        self,
        conn: Connection,
        rid: str,
        body: Any,
        actor: audit.Actor,
        base: str,
        if_match: str | None,
    ) -> tuple[dict[str, Any], list[MapChange]]:
        resource = normalise(with_default_name(body), AGENT_TYPE, mode="replace")
        row = st.get_agent(conn, rid)
        check_if_match(if_match, row.version)
        before = load_agent(conn, rid, base)
        return self._store_agent(conn, rid, resource, actor, base, "replace", before)

    def patch_agent(
        self,
        conn: Connection,
        rid: str,
        body: Any,
        actor: audit.Actor,
        base: str,
        if_match: str | None,
    ) -> tuple[dict[str, Any], list[MapChange]]:
        row = st.get_agent(conn, rid)
        check_if_match(if_match, row.version)
        before = load_agent(conn, rid, base)
        result = apply_patch(_for_patch(before), body, AGENT_TYPE)
        if not result.changed:
            self.audit_write(conn, actor, AGENT_TYPE, rid, "patch", {"changed": {}}, [])
            return before, []
        return self._store_agent(conn, rid, result.resource, actor, base, "patch", before)

    def delete_agent(
        self, conn: Connection, rid: str, actor: audit.Actor, if_match: str | None
    ) -> list[MapChange]:
        row = st.get_agent(conn, rid)
        check_if_match(if_match, row.version)
        groups, apps = st.delete_agent(conn, rid)
        # its children keep naming it: they (and theirs) are suspended now
        changes = self.refresh(conn, [rid, *descendants(conn, [rid])])
        detail = {
            "name": row.name,
            "removed_from_groups": groups,
            "removed_from_applications": apps,
        }
        self.audit_write(conn, actor, AGENT_TYPE, rid, "delete", detail, changes)
        return changes

    # --- AgenticApplications --------------------------------------------------------------

    def create_application(
        self, conn: Connection, body: Any, actor: audit.Actor, base: str
    ) -> tuple[dict[str, Any], list[MapChange]]:
        resource = normalise(body, AGENTIC_APPLICATION_TYPE, mode="create")
        links = _agent_links(conn, resource)
        row = st.insert_application(conn, resource)
        moved = st.set_application_agents(conn, row.id, links)
        changes = self.refresh(conn, moved)
        out = load_application(conn, row.id, base)
        self.audit_write(
            conn,
            actor,
            AGENTIC_APPLICATION_TYPE,
            row.id,
            "create",
            {"resource": _view(out)},
            changes,
        )
        return out, changes

    def _store_application(
        self,
        conn: Connection,
        rid: str,
        resource: dict[str, Any],
        actor: audit.Actor,
        base: str,
        operation: str,
        before: dict[str, Any],
    ) -> tuple[dict[str, Any], list[MapChange]]:
        links = _agent_links(conn, resource)
        row = st.get_application(conn, rid)
        st.update_application(conn, row, resource)
        moved = st.set_application_agents(conn, rid, links)
        # The client ids of the application's owned agents may have changed with it.
        owned = [a for a, kind in links.items() if kind == "owned"]
        changes = self.refresh(conn, list(dict.fromkeys([*moved, *owned])))
        out = load_application(conn, rid, base)
        self.audit_write(
            conn,
            actor,
            AGENTIC_APPLICATION_TYPE,
            rid,
            operation,
            {"changed": _diff(before, out), "agents_changed": moved},
            changes,
        )
        return out, changes

    def replace_application(
        self,
        conn: Connection,
        rid: str,
        body: Any,
        actor: audit.Actor,
        base: str,
        if_match: str | None,
    ) -> tuple[dict[str, Any], list[MapChange]]:
        resource = normalise(body, AGENTIC_APPLICATION_TYPE, mode="replace")
        row = st.get_application(conn, rid)
        check_if_match(if_match, row.version)
        before = load_application(conn, rid, base)
        return self._store_application(conn, rid, resource, actor, base, "replace", before)

    def patch_application(
        self,
        conn: Connection,
        rid: str,
        body: Any,
        actor: audit.Actor,
        base: str,
        if_match: str | None,
    ) -> tuple[dict[str, Any], list[MapChange]]:
        row = st.get_application(conn, rid)
        check_if_match(if_match, row.version)
        before = load_application(conn, rid, base)
        result = apply_patch(_for_patch(before), body, AGENTIC_APPLICATION_TYPE)
        if not result.changed:
            self.audit_write(
                conn, actor, AGENTIC_APPLICATION_TYPE, rid, "patch", {"changed": {}}, []
            )
            return before, []
        return self._store_application(conn, rid, result.resource, actor, base, "patch", before)

    def delete_application(
        self, conn: Connection, rid: str, actor: audit.Actor, if_match: str | None
    ) -> list[MapChange]:
        row = st.get_application(conn, rid)
        check_if_match(if_match, row.version)
        agents = st.delete_application(conn, rid)
        changes = self.refresh(conn, agents)
        self.audit_write(
            conn,
            actor,
            AGENTIC_APPLICATION_TYPE,
            rid,
            "delete",
            {"name": row.name, "agents": agents},
            changes,
        )
        return changes

    # --- the owner cascade -----------------------------------------------------------------

    def owner_cascade(
        self, conn: Connection, owner_id: str, owner_type: str, reason: str, actor: audit.Actor
    ) -> list[MapChange]:
        """Recompute the agents this user or group owns after it was deactivated,
        reactivated or deleted; audited as ``agent.owner_cascade`` naming owner and agents."""
        owned = st.agents_owned_by(conn, [owner_id])
        if not owned:
            return []
        owned += [a for a in descendants(conn, owned) if a not in owned]
        changes = self.refresh(conn, owned)
        named = []
        for agent_id in owned:
            row = st.find_agent(conn, agent_id)
            if row is None:  # pragma: no cover - links of a deleted agent are deleted with it
                continue
            named.append(
                {"id": agent_id, "name": row.name, "suspended": is_suspended(conn, agent_id)}
            )
        keys = [
            {
                "seq": c.seq,
                "key": c.identity_key,
                "value": c.value,
                "agent_id": c.user_id,
                "deprovision": c.deprovision,
            }
            for c in changes
        ]
        audit.append(
            conn,
            "agent.owner_cascade",
            actor,
            resource_type=owner_type,
            resource_id=owner_id,
            operation=reason,
            detail={
                "owner": {"id": owner_id, "type": owner_type},
                "agents": named,
                "map_changes": keys,
            },
        )
        return changes


def is_suspended(conn: Connection, agent_id: str) -> bool:
    """An agent whose owners are all gone or inactive, or whose parent (up the chain) is
    inactive, suspended or gone (see the module docstring)."""
    seen: set[str] = set()
    current = agent_id
    while True:
        owners = st.owners_of(conn, current)
        if owners and not st.live_owners(conn, owners):
            return True
        seen.add(current)
        parent = st.parent_of(conn, current)
        if parent is None:
            return False
        row = st.find_agent(conn, parent)
        if row is None or not row.active or parent in seen:  # a cycle cannot be stored
            return True
        current = parent


def _view(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("meta", "schemas")}


def _diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    keys = (set(old) | set(new)) - {"meta", "schemas", "groups", "applications"}
    return {k: [old.get(k), new.get(k)] for k in sorted(keys) if old.get(k) != new.get(k)}
