"""SQL for SCIM resources: users, groups and memberships, as rows.

Does: insert, read, update and delete users, groups and memberships; uniqueness of userName
and group displayName (the unique indexes decide); pages of rows for a compiled filter
(``filter_sql``, ``sort_sql``).
Does not: SCIM rules (callers pass canonical resources, ``scimgate.scim.resource``), or
rendering rows as SCIM resources (``scimgate.scim.render``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from scimgate.scim import errors
from scimgate.scim.filter import Node
from scimgate.store import tables
from scimgate.store.db import Sql, now_iso
from scimgate.store.filter_sql import MemberFilter

U, G, M = tables.users, tables.groups, tables.members

# Keys of a canonical resource that live in columns or are computed, not in ``attrs``.
_NOT_IN_ATTRS = frozenset({"id", "meta", "schemas", "groups", "members", "password"})


def new_id() -> str:
    return str(uuid.uuid4())


def _attrs(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k not in _NOT_IN_ATTRS}


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT … ON CONFLICT DO NOTHING on both dialects (re-adding a member is a no-op,
    RFC 7644 §3.5.2.1)."""
    if not rows:
        return
    stmt: Any
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    conn.execute(stmt, rows)


@dataclass(frozen=True)
class UserRow:
    id: str
    user_name: str
    active: bool
    attrs: dict[str, Any]
    version: int
    created: str
    last_modified: str


@dataclass(frozen=True)
class GroupRow:
    id: str
    display_name: str
    external_id: str | None
    attrs: dict[str, Any]
    version: int
    created: str
    last_modified: str


def _user(r: Any) -> UserRow:
    return UserRow(
        r.id, r.user_name, bool(r.active), dict(r.attrs), r.version, r.created, r.last_modified
    )


def _group(r: Any) -> GroupRow:
    return GroupRow(
        r.id, r.display_name, r.external_id, dict(r.attrs), r.version, r.created, r.last_modified
    )


def _group_from(v: dict[str, Any]) -> GroupRow:
    return GroupRow(v["id"], v["display_name"], v["external_id"], dict(v["attrs"]),
                    v["version"], v["created"], v["last_modified"])  # fmt: skip


# --- users -------------------------------------------------------------------------------


def _user_values(resource: dict[str, Any]) -> dict[str, Any]:
    user_name = resource["userName"]
    return {
        "user_name": user_name,
        "user_name_lower": user_name.lower(),
        "external_id": resource.get("externalId"),
        "active": bool(resource.get("active", True)),
        "display_name": resource.get("displayName"),
        "attrs": _attrs(resource),
    }


# Hot paths (every IdP create, lookup, PATCH): plain SQL on the DBAPI connection
# (store.db.Sql) instead of a Core construct built, cache-keyed and compiled per call.
_USER_COLUMNS = "id, user_name, active, attrs, version, created, last_modified"
_USER_BY_ID = Sql(f"SELECT {_USER_COLUMNS} FROM scim_users WHERE id = ?")
_IDP_GROUPS_OF_USER = Sql(
    "SELECT g.display_name, g.external_id FROM scim_members m "
    "JOIN scim_groups g ON g.id = m.group_id WHERE m.member_id = ?"
)
_USER_WITH_GROUPS = Sql(
    "SELECT u.id, u.user_name, u.active, u.attrs, u.version, u.created, u.last_modified, "
    "g.id, g.display_name FROM scim_users u "
    "LEFT JOIN scim_members m ON m.member_id = u.id "
    "LEFT JOIN scim_groups g ON g.id = m.group_id "
    "WHERE u.id = ? ORDER BY g.display_name"
)
_USERS_BY_NAME_WITH_GROUPS = Sql(
    "SELECT u.id, u.user_name, u.active, u.attrs, u.version, u.created, u.last_modified, "
    "g.id, g.display_name FROM scim_users u "
    "LEFT JOIN scim_members m ON m.member_id = u.id "
    "LEFT JOIN scim_groups g ON g.id = m.group_id "
    "WHERE u.user_name_lower = ? ORDER BY u.id, g.display_name"
)
_USER_NAME_TAKEN = Sql("SELECT id FROM scim_users WHERE user_name_lower = ? AND id <> ?")
_INSERT_USER = Sql(
    "INSERT INTO scim_users (id, user_name, user_name_lower, external_id, active, "
    "display_name, attrs, version, created, last_modified) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_name_lower) DO NOTHING",
    "INSERT INTO scim_users (id, user_name, user_name_lower, external_id, active, "
    "display_name, attrs, version, created, last_modified) "
    "VALUES (?, ?, ?, ?, ?, ?, CAST(? AS JSONB), ?, ?, ?) ON CONFLICT (user_name_lower) DO NOTHING",
)
_UPDATE_USER = Sql(
    "UPDATE scim_users SET user_name = ?, user_name_lower = ?, external_id = ?, active = ?, "
    "display_name = ?, attrs = ?, version = ?, last_modified = ? WHERE id = ?",
    "UPDATE scim_users SET user_name = ?, user_name_lower = ?, external_id = ?, active = ?, "
    "display_name = ?, attrs = CAST(? AS JSONB), version = ?, last_modified = ? WHERE id = ?",
)


def _doc(value: Any) -> dict[str, Any]:
    """A JSON column as read by the DBAPI: text on SQLite, already decoded on PostgreSQL."""
    return json.loads(value) if isinstance(value, str | bytes) else dict(value)


def _user_raw(r: Sequence[Any]) -> UserRow:
    return UserRow(r[0], r[1], bool(r[2]), _doc(r[3]), r[4], r[5], r[6])


def _taken(user_name: str) -> errors.Uniqueness:
    return errors.Uniqueness(f"userName {user_name!r} is already taken")


def insert_user(conn: Connection, resource: dict[str, Any]) -> UserRow:
    now = now_iso()
    v = _user_values(resource)
    uid = new_id()
    # RFC 7643 §4.1.1 uniqueness: the unique index on user_name_lower decides, in the same
    # statement (writers are serialised anyway, Database.write).
    cur = _INSERT_USER.run(conn, (uid, v["user_name"], v["user_name_lower"], v["external_id"],
                                  v["active"], v["display_name"], json.dumps(v["attrs"]),
                                  1, now, now))  # fmt: skip
    if cur.rowcount == 0:
        raise _taken(resource["userName"])
    return UserRow(uid, v["user_name"], v["active"], v["attrs"], 1, now, now)


def get_user(conn: Connection, user_id: str) -> UserRow:
    r = _USER_BY_ID.run(conn, (user_id,)).fetchone()
    if r is None:
        raise errors.NotFound(f"User {user_id} not found")
    return _user_raw(r)


def find_user(conn: Connection, user_id: str) -> UserRow | None:
    """The user, or None when there is none with this id."""
    r = _USER_BY_ID.run(conn, (user_id,)).fetchone()
    return _user_raw(r) if r is not None else None


def get_user_with_groups(conn: Connection, user_id: str) -> tuple[UserRow, list[tuple[str, str]]]:
    """A user and its direct groups [(group id, displayName)], in one statement."""
    rows = _USER_WITH_GROUPS.run(conn, (user_id,)).fetchall()
    if not rows:
        raise errors.NotFound(f"User {user_id} not found")
    return _user_raw(rows[0]), [(r[7], r[8]) for r in rows if r[7] is not None]


def users_by_user_name(
    conn: Connection, user_name: str
) -> list[tuple[UserRow, list[tuple[str, str]]]]:
    """The user whose userName equals ``user_name`` case-insensitively (RFC 7643 §4.1.1),
    with its direct groups [(group id, displayName)], in one statement."""
    out: dict[str, tuple[UserRow, list[tuple[str, str]]]] = {}
    for r in _USERS_BY_NAME_WITH_GROUPS.run(conn, (user_name.lower(),)):
        if r[0] not in out:
            out[r[0]] = (_user_raw(r), [])
        if r[7] is not None:
            out[r[0]][1].append((r[7], r[8]))
    return list(out.values())


def update_user(conn: Connection, row: UserRow, resource: dict[str, Any]) -> UserRow:
    v = _user_values(resource)
    if v["user_name_lower"] != row.user_name.lower() and (
        _USER_NAME_TAKEN.run(conn, (v["user_name_lower"], row.id)).fetchone() is not None
    ):
        raise _taken(resource["userName"])
    version, now = row.version + 1, now_iso()
    _UPDATE_USER.run(conn, (v["user_name"], v["user_name_lower"], v["external_id"], v["active"],
                            v["display_name"], json.dumps(v["attrs"]), version, now, row.id))  # fmt: skip
    # What we just wrote, not a re-read: one statement less per write.
    return UserRow(row.id, v["user_name"], v["active"], v["attrs"], version, row.created, now)


def delete_user(conn: Connection, user_id: str) -> list[str]:
    """Delete a user and its memberships in every group at once; returns those group ids."""
    group_ids = [
        r[0] for r in conn.execute(sa.select(M.c.group_id).where(M.c.member_id == user_id))
    ]
    conn.execute(M.delete().where(M.c.member_id == user_id))
    if group_ids:
        touch_groups(conn, group_ids)
    conn.execute(U.delete().where(U.c.id == user_id))
    return group_ids


def groups_of_users(conn: Connection, user_ids: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """user id → [(group id, displayName)] (direct memberships)."""
    out: dict[str, list[tuple[str, str]]] = {uid: [] for uid in user_ids}
    if not user_ids:
        return out
    ids = list(out)
    q = Sql(
        "SELECT m.member_id, g.id, g.display_name FROM scim_members m "
        "JOIN scim_groups g ON g.id = m.group_id "
        f"WHERE m.member_id IN ({', '.join('?' for _ in ids)}) "
        "ORDER BY m.member_id, g.display_name"
    )
    for member_id, gid, name in q.run(conn, ids):
        out[member_id].append((gid, name))
    return out


def idp_groups_of_user(conn: Connection, user_id: str) -> list[dict[str, Any]]:
    """The user's direct groups as the policy compiler wants them (displayName, externalId)."""
    return [
        {"displayName": n, "externalId": e} for n, e in _IDP_GROUPS_OF_USER.run(conn, (user_id,))
    ]


def idp_groups_by_user(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Every member's direct groups as :func:`idp_groups_of_user` gives them for one user,
    in one query."""
    q = sa.select(M.c.member_id, G.c.display_name, G.c.external_id).select_from(
        M.join(G, G.c.id == M.c.group_id)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for member_id, name, external_id in conn.execute(q):
        out.setdefault(member_id, []).append({"displayName": name, "externalId": external_id})
    return out


_ALL_USERS = (U.c.id, U.c.user_name, U.c.active, U.c.attrs, U.c.version, U.c.created,
              U.c.last_modified)  # fmt: skip


def all_users(conn: Connection) -> Iterator[UserRow]:
    """Every user in id order, read with the driver's own cursor (no SQLAlchemy Row and type
    processing per user: a third of the time at 100k users); Core when the driver
    connection is not at hand."""
    try:
        dbapi = conn.connection.dbapi_connection
    except AttributeError:
        dbapi = None
    if dbapi is None:
        for r in conn.execute(sa.select(U).order_by(U.c.id)):
            yield _user(r)
        return
    cur = dbapi.cursor()
    try:
        # Fixed names, no parameters.
        cur.execute(
            f"SELECT {', '.join(c.name for c in _ALL_USERS)} FROM {U.name} ORDER BY {U.c.id.name}"
        )
        while rows := cur.fetchmany(5000):
            for uid, user_name, active, attrs, version, created, last_modified in rows:
                yield UserRow(
                    uid, user_name, bool(active), _doc(attrs), version, created, last_modified
                )
    finally:
        cur.close()


# --- groups ------------------------------------------------------------------------------


def _unique_display_name(conn: Connection, name: str, exclude_id: str | None) -> None:
    q = sa.select(G.c.id).where(G.c.display_name_lower == name.lower())
    if exclude_id:
        q = q.where(G.c.id != exclude_id)
    if conn.execute(q).first() is not None:
        raise errors.Uniqueness(f"Group displayName {name!r} is already taken")


def _group_values(resource: dict[str, Any]) -> dict[str, Any]:
    return {
        "display_name": resource["displayName"],
        "display_name_lower": resource["displayName"].lower(),
        "external_id": resource.get("externalId"),
        "attrs": _attrs(resource),
    }


def insert_group(conn: Connection, resource: dict[str, Any]) -> GroupRow:
    _unique_display_name(conn, resource["displayName"], None)
    now = now_iso()
    values = {
        "id": new_id(),
        **_group_values(resource),
        "version": 1,
        "created": now,
        "last_modified": now,
    }
    conn.execute(G.insert().values(**values))
    return _group_from(values)


def get_group(conn: Connection, group_id: str) -> GroupRow:
    r = conn.execute(sa.select(G).where(G.c.id == group_id)).first()
    if r is None:
        raise errors.NotFound(f"Group {group_id} not found")
    return _group(r)


def update_group(conn: Connection, row: GroupRow, resource: dict[str, Any] | None) -> GroupRow:
    """Store new attributes (or only bump version/lastModified when resource is None)."""
    values: dict[str, Any] = {"version": row.version + 1, "last_modified": now_iso()}
    if resource is not None:
        _unique_display_name(conn, resource["displayName"], row.id)
        values.update(_group_values(resource))
    conn.execute(G.update().where(G.c.id == row.id).values(**values))
    return _group_from(
        {
            "id": row.id,
            "display_name": row.display_name,
            "external_id": row.external_id,
            "attrs": row.attrs,
            "created": row.created,
            **values,
        }
    )


def touch_groups(conn: Connection, group_ids: Iterable[str]) -> None:
    ids = list(group_ids)
    if ids:
        conn.execute(
            G.update()
            .where(G.c.id.in_(ids))
            .values(version=G.c.version + 1, last_modified=now_iso())
        )


def delete_group(conn: Connection, group_id: str) -> list[str]:
    """Delete a group; returns the ids of its former members."""
    members = [r[0] for r in conn.execute(sa.select(M.c.member_id).where(M.c.group_id == group_id))]
    conn.execute(M.delete().where(M.c.group_id == group_id))
    # Nested membership: the group disappears from groups it belonged to.
    parents = [r[0] for r in conn.execute(sa.select(M.c.group_id).where(M.c.member_id == group_id))]
    conn.execute(M.delete().where(M.c.member_id == group_id))
    touch_groups(conn, parents)
    conn.execute(G.delete().where(G.c.id == group_id))
    return members


def member_rows(conn: Connection, group_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """group id → its members as SCIM values (display = userName or group displayName)."""
    out: dict[str, list[dict[str, Any]]] = {gid: [] for gid in group_ids}
    if not group_ids:
        return out
    ug = G.alias("member_group")
    ag = tables.agents
    q = (
        sa.select(M.c.group_id, M.c.member_id, M.c.member_type, U.c.user_name, ug.c.display_name,
                  ag.c.name)
        .select_from(
            M.outerjoin(U, U.c.id == M.c.member_id).outerjoin(ug, ug.c.id == M.c.member_id)
            .outerjoin(ag, ag.c.id == M.c.member_id)
        )
        .where(M.c.group_id.in_(list(group_ids)))
        .order_by(M.c.group_id, M.c.member_id)
    )  # fmt: skip
    for gid, mid, mtype, uname, gname, aname in conn.execute(q):
        out[gid].append({"value": mid, "type": mtype, "display": uname or gname or aname})
    return out


def existing_member_types(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    """Which of these ids are users or groups (members must reference existing resources)."""
    if not ids:
        return {}
    found = {r[0]: "User" for r in conn.execute(sa.select(U.c.id).where(U.c.id.in_(list(ids))))}
    missing = [i for i in ids if i not in found]
    if missing:
        found.update(
            {r[0]: "Group" for r in conn.execute(sa.select(G.c.id).where(G.c.id.in_(missing)))}
        )
    missing = [i for i in ids if i not in found]
    if missing:  # agents may be members of groups (draft-abbey-scim-agent-extension-00 §3.1)
        agents = tables.agents
        found.update(
            {
                r[0]: "Agent"
                for r in conn.execute(sa.select(agents.c.id).where(agents.c.id.in_(missing)))
            }
        )
    return found


def add_members(conn: Connection, group_id: str, member_ids: Sequence[str]) -> list[str]:
    """Insert memberships (O(members added)); returns the ids that were not members before."""
    if not member_ids:
        return []
    unique = list(dict.fromkeys(member_ids))
    types = existing_member_types(conn, unique)
    unknown = [i for i in unique if i not in types]
    if unknown:
        raise errors.InvalidValue(
            f"members reference unknown resource(s): {', '.join(unknown[:5])}"
        )
    if group_id in types:
        raise errors.InvalidValue("a group cannot be a member of itself")
    already = {
        r[0]
        for r in conn.execute(
            sa.select(M.c.member_id).where(M.c.group_id == group_id, M.c.member_id.in_(unique))
        )
    }
    new = [i for i in unique if i not in already]
    _insert_ignore(
        conn, M, [{"group_id": group_id, "member_id": i, "member_type": types[i]} for i in new]
    )
    return new


def remove_members(conn: Connection, group_id: str, member_ids: Sequence[str]) -> list[str]:
    """Delete memberships (O(members removed)); returns the ids that were members."""
    if not member_ids:
        return []
    unique = list(dict.fromkeys(member_ids))
    present = [
        r[0]
        for r in conn.execute(
            sa.select(M.c.member_id).where(M.c.group_id == group_id, M.c.member_id.in_(unique))
        )
    ]
    if present:
        conn.execute(M.delete().where(M.c.group_id == group_id, M.c.member_id.in_(present)))
    return present


def all_member_ids(conn: Connection, group_id: str) -> list[str]:
    return [r[0] for r in conn.execute(sa.select(M.c.member_id).where(M.c.group_id == group_id))]


# --- lists -------------------------------------------------------------------------------


def count_and_page(
    conn: Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool] | None,
    order: Any | None,
    offset: int,
    limit: int,
) -> tuple[int, list[Any]]:
    """The number of rows matching ``where`` and one page of them, in ``order`` (a sortBy
    term from ``sort_sql.order_by``; None: creation order), the id breaking ties so pages
    are stable."""
    count_q = sa.select(sa.func.count()).select_from(table)
    if where is not None:
        count_q = count_q.where(where)
    total = int(conn.execute(count_q).scalar_one())
    if limit <= 0 or offset >= total:
        return total, []
    q = sa.select(table)
    if where is not None:
        q = q.where(where)
    first = order if order is not None else table.c.created
    q = q.order_by(first, table.c.id).offset(offset).limit(limit)
    return total, list(conn.execute(q))


def page_users(
    conn: Connection, where: Any, order: Any | None, offset: int, limit: int
) -> tuple[int, list[UserRow]]:
    total, rows = count_and_page(conn, U, where, order, offset, limit)
    return total, [_user(r) for r in rows]


def page_groups(
    conn: Connection, where: Any, order: Any | None, offset: int, limit: int
) -> tuple[int, list[GroupRow]]:
    total, rows = count_and_page(conn, G, where, order, offset, limit)
    return total, [_group(r) for r in rows]


def member_ids_matching(conn: Connection, group_id: str, node: Node) -> list[str]:
    """Members of a group matching a ``members[...]`` filter, evaluated in SQL by the one
    filter compiler (``filter_sql.MemberFilter``)."""
    member_filter = MemberFilter(conn.dialect.name)
    q = (
        sa.select(M.c.member_id)
        .select_from(member_filter.source)
        .where(M.c.group_id == group_id, member_filter.where(node))
    )
    return [r[0] for r in conn.execute(q)]
