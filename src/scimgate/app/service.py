"""The SCIM service: chains the pure SCIM rules (``scimgate.scim``) with storage calls
(``scimgate.store``) inside one transaction per operation.

Does: transactions, ETag preconditions, which users' HAProxy entries a write affects (their
entries through ``app.enforcement``), the audit event of every write.
Does not: parse HTTP (``scimgate.api``), define SCIM rules (``scimgate.scim``), write SQL
(``scimgate.store``), or talk to HAProxy: the store announces committed change-log rows
(``Database.on_commit``) and the sync engine follows the change log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from scimgate.app import agents as agent_cases
from scimgate.app.enforcement import refresh_identities
from scimgate.audit import log as audit
from scimgate.scim import errors
from scimgate.scim.etag import check_if_match
from scimgate.scim.filter import Node, parse_filter
from scimgate.scim.patch import PatchResult, apply_patch
from scimgate.scim.render import group_resource, user_resource
from scimgate.scim.resource import normalise
from scimgate.scim.schema import (
    AGENT_TYPE,
    AGENTIC_APPLICATION_TYPE,
    GROUP_TYPE,
    RESOURCE_TYPES,
    USER_TYPE,
    ResourceType,
)
from scimgate.scim.text import char_problem
from scimgate.store import agents as st_agents, outbox, resources as rs
from scimgate.store.db import Database
from scimgate.store.filter_sql import compile_filter, user_name_equality
from scimgate.store.sort_sql import order_by

# Resource ids are ours (UUIDs); anything longer, or not storable text, names nothing.
_MAX_ID_CHARS = 64


class Enforcement(Protocol):
    """What the handler needs from the policy: entries per user, and which groups matter."""

    def entries(self, user: dict[str, Any], idp_groups: list[dict[str, Any]]) -> dict[str, str]: ...

    def group_relevant(self, display_name: str | None, external_id: str | None) -> bool: ...

    def agent_entries(
        self,
        agent: dict[str, Any],
        idp_groups: list[dict[str, Any]],
        client_ids: list[str],
        suspended: bool,
    ) -> dict[str, str]: ...


@dataclass
class WriteResult:
    resource: dict[str, Any] | None
    changes: list[outbox.MapChange] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return max((c.seq for c in self.changes), default=0)


def _rtype(name: str) -> ResourceType:
    try:
        return RESOURCE_TYPES[name]
    except KeyError:
        raise errors.NotFound(f"unknown resource type {name}") from None


def _check_id(rtype_name: str, rid: str) -> None:
    """404 for an id no resource can have, before it reaches SQL (PostgreSQL refuses NUL)."""
    if len(rid) > _MAX_ID_CHARS or char_problem(rid) is not None:
        raise errors.NotFound(f"{rtype_name} not found: not a resource id")


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Top-level attribute changes, for the audit trail: {attr: [old, new]}."""
    skip = {"meta", "schemas", "members", "groups"}
    keys = (set(old) | set(new)) - skip
    return {k: [old.get(k), new.get(k)] for k in sorted(keys) if old.get(k) != new.get(k)}


class ScimService:
    def __init__(
        self,
        db: Database,
        *,
        enforcement: Enforcement | None = None,
    ) -> None:
        self.db = db
        self.enforcement = enforcement
        # Agents and AgenticApplications (app.agents), with this service's refresh and audit.
        self.agents = agent_cases.AgentWrites(
            lambda conn, ids: self._refresh(conn, ids, ""), _audit_write
        )

    # --- reads ---------------------------------------------------------------------------

    def get(
        self, rtype_name: str, rid: str, base_url: str, *, include_members: bool = True
    ) -> dict[str, Any]:
        _check_id(rtype_name, rid)
        with self.db.read() as conn:
            return self._load(conn, rtype_name, rid, base_url, include_members=include_members)

    def _load(
        self,
        conn: Connection,
        rtype_name: str,
        rid: str,
        base_url: str,
        *,
        include_members: bool = True,
    ) -> dict[str, Any]:
        if rtype_name == "User":
            row, groups = rs.get_user_with_groups(conn, rid)
            return user_resource(row, base_url, groups)
        if rtype_name == "Agent":
            return agent_cases.load_agent(conn, rid, base_url)
        if rtype_name == "AgenticApplication":
            return agent_cases.load_application(conn, rid, base_url)
        grow = rs.get_group(conn, rid)
        members = rs.member_rows(conn, [rid])[rid] if include_members else None
        return group_resource(grow, base_url, members)

    def version(self, rtype_name: str, rid: str) -> int:
        with self.db.read() as conn:
            if rtype_name == "Agent":
                return st_agents.get_agent(conn, rid).version
            if rtype_name == "AgenticApplication":
                return st_agents.get_application(conn, rid).version
            row = rs.get_user(conn, rid) if rtype_name == "User" else rs.get_group(conn, rid)
            return row.version

    def search(
        self,
        rtype_name: str,
        base_url: str,
        *,
        filter_text: str | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
        start_index: int = 1,
        count: int = 100,
        include_members: bool = True,
    ) -> tuple[int, list[dict[str, Any]]]:
        rtype = _rtype(rtype_name)
        node: Node | None = parse_filter(filter_text) if filter_text else None
        user_name = user_name_equality(node, rtype) if not sort_by else None
        if user_name is not None:
            # What IdPs send before every create: one indexed statement, no count query.
            with self.db.read() as conn:
                found = rs.users_by_user_name(conn, user_name)
            offset = max(start_index, 1) - 1
            page = found[offset : offset + max(count, 0)]
            return len(found), [user_resource(r, base_url, groups) for r, groups in page]
        dialect = self.db.dialect
        where = compile_filter(node, rtype, dialect) if node is not None else None
        # RFC 7644 §3.4.2.3: without sortBy the order is the provider's (creation order).
        order = None
        if sort_by:
            descending = (sort_order or "ascending").lower() == "descending"
            order = order_by(sort_by, rtype, dialect, descending=descending)
        offset = max(start_index, 1) - 1
        with self.db.read() as conn:
            if rtype is USER_TYPE:
                total, urows = rs.page_users(conn, where, order, offset, count)
                groups = rs.groups_of_users(conn, [r.id for r in urows])
                return total, [user_resource(r, base_url, groups[r.id]) for r in urows]
            if rtype is AGENT_TYPE:
                total, arows = st_agents.page_agents(conn, where, order, offset, count)
                return total, [agent_cases.load_agent(conn, a.id, base_url) for a in arows]
            if rtype is AGENTIC_APPLICATION_TYPE:
                total, prows = st_agents.page_applications(conn, where, order, offset, count)
                return total, [agent_cases.load_application(conn, p.id, base_url) for p in prows]
            total, grows = rs.page_groups(conn, where, order, offset, count)
            members = rs.member_rows(conn, [g.id for g in grows]) if include_members else {}
            return total, [group_resource(g, base_url, members.get(g.id)) for g in grows]

    def search_types(
        self,
        rtype_names: Sequence[str],
        base_url: str,
        *,
        filter_text: str | None,
        sort_by: str | None,
        sort_order: str | None,
        start_index: int,
        count: int,
        include_members: bool,
    ) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        """:meth:`search` over several resource types, paged across them in turn (a root
        search, RFC 7644 §3.4.3): the total, and one page of (type name, resource)."""
        total = 0
        found: list[tuple[str, dict[str, Any]]] = []
        offset = max(start_index, 1) - 1
        for name in rtype_names:
            n, page = self.search(
                name,
                base_url,
                filter_text=filter_text,
                sort_by=sort_by,
                sort_order=sort_order,
                start_index=max(offset - total, 0) + 1,
                count=max(count - len(found), 0),
                include_members=include_members,
            )
            total += n
            found.extend((name, resource) for resource in page)
        return total, found

    # --- writes --------------------------------------------------------------------------

    def _refresh(
        self, conn: Connection, user_ids: Sequence[str], base_url: str
    ) -> list[outbox.MapChange]:
        if self.enforcement is None or not user_ids:
            return []
        agent_entries = getattr(self.enforcement, "agent_entries", None)
        return refresh_identities(conn, user_ids, self.enforcement.entries, agent_entries,
                                  base_url)  # fmt: skip

    def _refresh_group(
        self,
        conn: Connection,
        gid: str,
        before: tuple[str | None, str | None],
        after: tuple[str | None, str | None],
        added: list[str],
        removed: list[str],
        base_url: str,
    ) -> list[outbox.MapChange]:
        """Map changes of a group write: only the members that changed, unless the group's
        name or externalId changed (then every member: the policy maps groups by those)."""
        if not self._group_matters(before, after):
            return []
        affected = rs.all_member_ids(conn, gid) + removed if before != after else added + removed
        return self._refresh(conn, affected, base_url)

    def _cascade(
        self,
        conn: Connection,
        owner_id: str,
        was_active: bool,
        is_active: bool,
        actor: audit.Actor,
        reason: str | None = None,
        owner_type: str = "User",
    ) -> list[outbox.MapChange]:
        """The owner cascade (``app.agents``): an owner deactivated, reactivated or deleted
        suspends or restores the agents it owns, in this transaction."""
        if reason is None:
            if was_active == is_active:
                return []
            reason = "owner_reactivated" if is_active else "owner_deactivated"
        return self.agents.owner_cascade(conn, owner_id, owner_type, reason, actor)

    def _group_matters(self, *groups: tuple[str | None, str | None]) -> bool:
        if self.enforcement is None:
            return False
        return any(self.enforcement.group_relevant(n, e) for n, e in groups)

    def create(self, rtype_name: str, body: Any, actor: audit.Actor, base_url: str) -> WriteResult:
        rtype = _rtype(rtype_name)
        if rtype in (AGENT_TYPE, AGENTIC_APPLICATION_TYPE):
            with self.db.write() as conn:
                if rtype is AGENT_TYPE:
                    res, achanges = self.agents.create_agent(conn, body, actor, base_url)
                else:
                    res, achanges = self.agents.create_application(conn, body, actor, base_url)
            return WriteResult(res, achanges)
        resource = normalise(body, rtype, mode="create")
        with self.db.write() as conn:
            if rtype is USER_TYPE:
                row = rs.insert_user(conn, resource)
                changes = self._refresh(conn, [row.id], base_url)
                out = user_resource(row, base_url)
                rid = row.id
            else:
                grow = rs.insert_group(conn, resource)
                member_ids = [m["value"] for m in body_members(body)]
                added = rs.add_members(conn, grow.id, member_ids)
                changes = (
                    self._refresh(conn, added, base_url)
                    if self._group_matters((grow.display_name, grow.external_id))
                    else []
                )
                out = group_resource(grow, base_url, rs.member_rows(conn, [grow.id])[grow.id])
                rid = grow.id
            _audit_write(conn, actor, rtype, rid, "create", {"resource": _audit_view(out)}, changes)
        return WriteResult(out, changes)

    def replace(
        self,
        rtype_name: str,
        rid: str,
        body: Any,
        actor: audit.Actor,
        base_url: str,
        if_match: str | None = None,
    ) -> WriteResult:
        rtype = _rtype(rtype_name)
        _check_id(rtype_name, rid)
        if isinstance(body, dict) and body.get("id") not in (None, rid):
            raise errors.Mutability("id is immutable and does not match the URL")
        if rtype in (AGENT_TYPE, AGENTIC_APPLICATION_TYPE):
            with self.db.write() as conn:
                replace = (
                    self.agents.replace_agent
                    if rtype is AGENT_TYPE
                    else self.agents.replace_application
                )
                res, achanges = replace(conn, rid, body, actor, base_url, if_match)
            return WriteResult(res, achanges)
        resource = normalise(body, rtype, mode="replace")
        with self.db.write() as conn:
            if rtype is USER_TYPE:
                row, groups = rs.get_user_with_groups(conn, rid)
                check_if_match(if_match, row.version)
                before = user_resource(row, base_url)
                was_active = row.active
                row = rs.update_user(conn, row, resource)
                changes = self._refresh(conn, [rid], base_url)
                changes += self._cascade(conn, rid, was_active, row.active, actor)
                # A user write does not change memberships: the groups read above stand.
                out = user_resource(row, base_url, groups)
                detail: dict[str, Any] = {"changed": diff(before, out)}
            else:
                grow = rs.get_group(conn, rid)
                check_if_match(if_match, grow.version)
                before_g = (grow.display_name, grow.external_id)
                before = group_resource(grow, base_url, None)
                wanted = list(dict.fromkeys(m["value"] for m in body_members(body)))
                current = rs.all_member_ids(conn, rid)
                removed = rs.remove_members(conn, rid, sorted(set(current) - set(wanted)))
                added = rs.add_members(conn, rid, [m for m in wanted if m not in set(current)])
                grow = rs.update_group(conn, grow, resource)
                after_g = (grow.display_name, grow.external_id)
                changes = self._refresh_group(
                    conn, rid, before_g, after_g, added, removed, base_url
                )
                out = group_resource(grow, base_url, rs.member_rows(conn, [rid])[rid])
                detail = {
                    "changed": diff(before, out),
                    "members_added": added,
                    "members_removed": removed,
                }
            _audit_write(conn, actor, rtype, rid, "replace", detail, changes)
        return WriteResult(out, changes)

    def patch(
        self,
        rtype_name: str,
        rid: str,
        body: Any,
        actor: audit.Actor,
        base_url: str,
        if_match: str | None = None,
        *,
        want_members: bool = False,
    ) -> WriteResult:
        rtype = _rtype(rtype_name)
        _check_id(rtype_name, rid)
        if rtype in (AGENT_TYPE, AGENTIC_APPLICATION_TYPE):
            with self.db.write() as conn:
                patch = (
                    self.agents.patch_agent
                    if rtype is AGENT_TYPE
                    else self.agents.patch_application
                )
                res, achanges = patch(conn, rid, body, actor, base_url, if_match)
            return WriteResult(res, achanges)
        with self.db.write() as conn:
            if rtype is USER_TYPE:
                row, groups = rs.get_user_with_groups(conn, rid)
                check_if_match(if_match, row.version)
                before = user_resource(row, base_url)
                result: PatchResult = apply_patch(_for_patch(before), body, rtype)
                changes: list[outbox.MapChange] = []
                if result.changed:
                    was_active = row.active
                    row = rs.update_user(conn, row, result.resource)
                    changes = self._refresh(conn, [rid], base_url)
                    changes += self._cascade(conn, rid, was_active, row.active, actor)
                # A user write does not change memberships: the groups read above stand.
                out = user_resource(row, base_url, groups)
                detail: dict[str, Any] = {"changed": diff(before, out)}
            else:
                grow = rs.get_group(conn, rid)
                check_if_match(if_match, grow.version)
                before = group_resource(grow, base_url, None)
                result = apply_patch(_for_patch(before), body, GROUP_TYPE)
                added, removed = self._apply_member_ops(conn, rid, result)
                before_g = (grow.display_name, grow.external_id)
                if result.changed or added or removed:
                    grow = rs.update_group(conn, grow, result.resource if result.changed else None)
                after_g = (grow.display_name, grow.external_id)
                changes = self._refresh_group(
                    conn, rid, before_g, after_g, added, removed, base_url
                )
                members = rs.member_rows(conn, [rid])[rid] if want_members else None
                out = group_resource(grow, base_url, members)
                detail = {
                    "changed": diff(before, out),
                    "members_added": added,
                    "members_removed": removed,
                }
            _audit_write(conn, actor, rtype, rid, "patch", detail, changes)
        return WriteResult(out, changes)

    def _apply_member_ops(
        self, conn: Connection, gid: str, result: PatchResult
    ) -> tuple[list[str], list[str]]:
        """Membership changes of a group PATCH, as row inserts/deletes: O(members changed).

        The PATCH engine has already composed the operations in order into a net effect.
        """
        added: list[str] = []
        removed: list[str] = []
        if result.members_replace is not None:
            current = set(rs.all_member_ids(conn, gid))
            wanted = list(dict.fromkeys(m.value for m in result.members_replace))
            removed += rs.remove_members(conn, gid, sorted(current - set(wanted)))
            added += rs.add_members(conn, gid, [m for m in wanted if m not in current])
        if result.members_remove_filter is not None:
            ids = rs.member_ids_matching(conn, gid, result.members_remove_filter)
            removed += rs.remove_members(conn, gid, ids)
        if result.members_remove:
            removed += rs.remove_members(conn, gid, list(result.members_remove))
        if result.members_add:
            added += rs.add_members(conn, gid, [m.value for m in result.members_add])
        return list(dict.fromkeys(added)), [m for m in dict.fromkeys(removed) if m not in added]

    def delete(
        self,
        rtype_name: str,
        rid: str,
        actor: audit.Actor,
        base_url: str,
        if_match: str | None = None,
    ) -> WriteResult:
        rtype = _rtype(rtype_name)
        _check_id(rtype_name, rid)
        if rtype in (AGENT_TYPE, AGENTIC_APPLICATION_TYPE):
            with self.db.write() as conn:
                if rtype is AGENT_TYPE:
                    achanges = self.agents.delete_agent(conn, rid, actor, if_match)
                else:
                    achanges = self.agents.delete_application(conn, rid, actor, if_match)
            return WriteResult(None, achanges)
        with self.db.write() as conn:
            if rtype is USER_TYPE:
                row = rs.get_user(conn, rid)
                check_if_match(if_match, row.version)
                group_ids = rs.delete_user(conn, rid)
                changes = self._refresh(conn, [rid], base_url)
                changes += self._cascade(conn, rid, row.active, False, actor, "owner_deleted")
                detail: dict[str, Any] = {
                    "userName": row.user_name,
                    "removed_from_groups": group_ids,
                }
            else:
                grow = rs.get_group(conn, rid)
                check_if_match(if_match, grow.version)
                members = rs.delete_group(conn, rid)
                changes = (
                    self._refresh(conn, members, base_url)
                    if self._group_matters((grow.display_name, grow.external_id))
                    else []
                )
                changes += self._cascade(conn, rid, True, False, actor, "owner_deleted", "Group")
                detail = {"displayName": grow.display_name, "members": len(members)}
            _audit_write(conn, actor, rtype, rid, "delete", detail, changes)
        return WriteResult(None, changes)


def is_user_name_lookup(filter_text: str | None, sort_by: str | None) -> bool:
    """A Users query that ``ScimService.search`` answers with one indexed read: a
    ``userName eq "…"`` filter (what IdPs send before every create), no sortBy."""
    if not filter_text or sort_by:
        return False
    try:
        return user_name_equality(parse_filter(filter_text), USER_TYPE) is not None
    except errors.ScimError:
        return False  # the search itself reports it


def body_members(body: Any) -> list[dict[str, Any]]:
    """The members of a Group POST/PUT body (validated shape: objects with a string value)."""
    if not isinstance(body, dict):
        return []
    raw = next((v for k, v in body.items() if k.lower() == "members"), None)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise errors.InvalidValue("members must be an array")
    out = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("value"), str) or not m["value"]:
            raise errors.InvalidValue("each member needs a string value (the member's id)")
        out.append(m)
    return out


def _for_patch(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in ("meta", "groups", "members")}


def _audit_view(resource: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k not in ("meta", "schemas")}
    if "members" in out:
        out["members"] = [m["value"] for m in out["members"]]
    return out


def _audit_write(
    conn: Connection,
    actor: audit.Actor,
    rtype: ResourceType,
    rid: str,
    operation: str,
    detail: dict[str, Any],
    changes: list[outbox.MapChange],
) -> None:
    """The audit event of a SCIM write, in its transaction, with the map changes it caused."""
    audit.append(conn, "scim.write", actor, resource_type=rtype.name, resource_id=rid,
                 operation=operation, detail={**detail, **_change_detail(changes)})  # fmt: skip


def _change_detail(changes: list[outbox.MapChange]) -> dict[str, Any]:
    if not changes:
        return {}
    return {
        "map_changes": [
            {
                "seq": c.seq,
                "key": c.identity_key,
                "value": c.value,
                "user_id": c.user_id,
                "deprovision": c.deprovision,
            }
            for c in changes
        ]
    }
