"""The reads behind the admin console's pages, each one bounded and index-friendly so a page
stays fast at 100k users: keyset paging (``WHERE key > last ORDER BY key LIMIT n``) and
prefix search as an index range on SQLite (``lower >= q AND lower < q || U+10FFFF``) and an
escaped LIKE on PostgreSQL.

Does: page and search users, agents and groups, one user's (or agent's) groups and
map-entry count, a group's members, audit events by filters (newest first), the recent ``sync.applied`` batches with
the time their first change was logged, the newest event of a kind.
Does not: decide what a page shows (``app.console_views``) or format anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.store import tables

U, G, M = tables.users, tables.groups, tables.members
A = tables.agents
E, C, ME = tables.audit_events, tables.change_log, tables.map_entries
_PREFIX_END = "\U0010ffff"


def _starts_with(conn: Connection, column: Any, prefix: str) -> Any:
    """``column`` starts with ``prefix``. SQLite compares text by code point, so a range is
    exact and uses the column's index; PostgreSQL's collation may not order by code point
    (en_US ignores punctuation at first), so there it is LIKE with the pattern escaped."""
    if conn.dialect.name == "sqlite":
        return sa.and_(column >= prefix, column < prefix + _PREFIX_END)
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped + "%", escape="\\")


@dataclass(frozen=True)
class PersonRow:
    id: str
    user_name: str
    display_name: str | None
    active: bool
    external_id: str | None
    last_modified: str


def _person(r: Any) -> PersonRow:
    return PersonRow(
        r.id, r.user_name, r.display_name, bool(r.active), r.external_id, r.last_modified
    )


_PERSON_COLS = (U.c.id, U.c.user_name, U.c.display_name, U.c.active, U.c.external_id,
                U.c.last_modified)  # fmt: skip


def page_people(conn: Connection, query: str, after: str, limit: int) -> list[PersonRow]:
    """Users whose userName starts with ``query`` (case-insensitive; or whose id or
    externalId is exactly ``query``), by userName, after the userName ``after``."""
    q = query.strip().lower()
    stmt = sa.select(*_PERSON_COLS).order_by(U.c.user_name_lower).limit(limit)
    if q:
        stmt = stmt.where(
            sa.or_(
                _starts_with(conn, U.c.user_name_lower, q),
                U.c.id == query.strip(),
                U.c.external_id == query.strip(),
            )
        )
    if after:
        stmt = stmt.where(U.c.user_name_lower > after.lower())
    return [_person(r) for r in conn.execute(stmt)]


def count_people(conn: Connection) -> tuple[int, int]:
    """(users, active users)."""
    total = conn.execute(sa.select(sa.func.count()).select_from(U)).scalar_one()
    active = conn.execute(
        sa.select(sa.func.count()).select_from(U).where(U.c.active.is_(True))
    ).scalar_one()
    return int(total or 0), int(active or 0)


def person(conn: Connection, user_id: str) -> PersonRow | None:
    r = conn.execute(sa.select(*_PERSON_COLS).where(U.c.id == user_id)).first()
    return _person(r) if r is not None else None


def groups_of(conn: Connection, user_id: str) -> list[tuple[str, str, str | None]]:
    """(id, displayName, externalId) of the groups the user is a direct member of."""
    q = (
        sa.select(G.c.id, G.c.display_name, G.c.external_id)
        .select_from(M.join(G, G.c.id == M.c.group_id))
        .where(M.c.member_id == user_id)
        .order_by(G.c.display_name_lower)
    )
    return [(r[0], r[1], r[2]) for r in conn.execute(q)]


def map_entry_count(conn: Connection, user_id: str) -> int:
    return int(conn.execute(sa.select(sa.func.count()).where(ME.c.user_id == user_id)).scalar_one())


@dataclass(frozen=True)
class AgentListRow:
    id: str
    name: str
    agent_user_name: str | None
    agent_type: str | None
    active: bool
    last_modified: str


_AGENT_COLS = (A.c.id, A.c.name, A.c.agent_user_name, A.c.attrs, A.c.active, A.c.last_modified)


def _agent_row(r: Any) -> AgentListRow:
    kind = (r.attrs or {}).get("agentType")
    return AgentListRow(r.id, r.name, r.agent_user_name, kind if isinstance(kind, str) else None,
                        bool(r.active), r.last_modified)  # fmt: skip


def page_agents(conn: Connection, query: str, after: str, limit: int) -> list[AgentListRow]:
    """Agents whose name or agentUserName starts with ``query`` (case-insensitive; or whose
    id, subject or externalId is exactly ``query``), by name then id (names are not unique),
    after the agent whose id is ``after``."""
    q, exact = query.strip().lower(), query.strip()
    stmt = sa.select(*_AGENT_COLS).order_by(A.c.name_lower, A.c.id).limit(limit)
    if q:
        stmt = stmt.where(
            sa.or_(
                _starts_with(conn, A.c.name_lower, q),
                _starts_with(conn, A.c.agent_user_name_lower, q),
                A.c.id == exact,
                A.c.subject == exact,
                A.c.external_id == exact,
            )
        )
    if after:
        last = conn.execute(sa.select(A.c.name_lower).where(A.c.id == after)).first()
        if last is not None:
            stmt = stmt.where(
                sa.or_(A.c.name_lower > last[0], sa.and_(A.c.name_lower == last[0], A.c.id > after))
            )
    return [_agent_row(r) for r in conn.execute(stmt)]


def count_agents(conn: Connection) -> tuple[int, int]:
    """(agents, active agents)."""
    total = conn.execute(sa.select(sa.func.count()).select_from(A)).scalar_one()
    active = conn.execute(
        sa.select(sa.func.count()).select_from(A).where(A.c.active.is_(True))
    ).scalar_one()
    return int(total or 0), int(active or 0)


@dataclass(frozen=True)
class GroupRow:
    id: str
    display_name: str
    external_id: str | None
    members: int


def page_groups(conn: Connection, query: str, after: str, limit: int) -> list[GroupRow]:
    """Groups by displayName; member counts for the page's groups only (an index range
    each, not an aggregate over every membership)."""
    q = query.strip().lower()
    stmt = (
        sa.select(G.c.id, G.c.display_name, G.c.external_id)
        .order_by(G.c.display_name_lower)
        .limit(limit)
    )
    if q:
        stmt = stmt.where(_starts_with(conn, G.c.display_name_lower, q))
    if after:
        stmt = stmt.where(G.c.display_name_lower > after.lower())
    rows = conn.execute(stmt).all()
    counts: dict[str, int] = dict(
        conn.execute(
            sa.select(M.c.group_id, sa.func.count())
            .where(M.c.group_id.in_([r[0] for r in rows]))
            .group_by(M.c.group_id)
        ).all()
    )
    return [GroupRow(r[0], r[1], r[2], int(counts.get(r[0], 0))) for r in rows]


def group(conn: Connection, group_id: str) -> GroupRow | None:
    r = conn.execute(
        sa.select(G.c.id, G.c.display_name, G.c.external_id).where(G.c.id == group_id)
    ).first()
    if r is None:
        return None
    n = conn.execute(sa.select(sa.func.count()).where(M.c.group_id == group_id)).scalar_one()
    return GroupRow(r[0], r[1], r[2], int(n))


def page_members(
    conn: Connection, group_id: str, after: str, limit: int
) -> tuple[list[PersonRow], str]:
    """A page of a group's members, in member-id order after the id ``after`` (the
    membership table's primary key: an index range whatever the group's size; sorting 50k
    members by userName to show 50 took 1.4 s, bench/console_scale.py), and the cursor of
    the next page ("" at the end). The page itself is sorted by userName for display."""
    ids = [
        r[0]
        for r in conn.execute(
            sa.select(M.c.member_id)
            .where(M.c.group_id == group_id, M.c.member_id > after)
            .order_by(M.c.member_id)
            .limit(limit)
        )
    ]
    people = [_person(r) for r in conn.execute(sa.select(*_PERSON_COLS).where(U.c.id.in_(ids)))]
    people.sort(key=lambda p: p.user_name.lower())
    return people, (ids[-1] if len(ids) == limit else "")


def all_groups(conn: Connection) -> list[tuple[str, str, str | None]]:
    """(id, displayName, externalId) of every group (the access matrix's rows are policy
    groups, a handful; the IdP groups feeding them are looked up by name)."""
    q = sa.select(G.c.id, G.c.display_name, G.c.external_id).order_by(G.c.display_name_lower)
    return [(r[0], r[1], r[2]) for r in conn.execute(q)]


def page_events(
    conn: Connection,
    *,
    kind: str = "",
    actor: str = "",
    resource_id: str = "",
    since: str = "",
    until: str = "",
    before_seq: int = 0,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Audit events matching every given filter, newest first, below ``before_seq``."""
    stmt = sa.select(E).order_by(E.c.seq.desc()).limit(limit)
    if kind:
        stmt = (
            stmt.where(E.c.kind == kind)
            if "*" not in kind
            else stmt.where(E.c.kind.like(kind.replace("*", "%")))
        )
    if actor:
        stmt = stmt.where(E.c.actor == actor)
    if resource_id:
        stmt = stmt.where(E.c.resource_id == resource_id)
    if since:
        stmt = stmt.where(E.c.ts >= since)
    if until:
        stmt = stmt.where(E.c.ts <= until)
    if before_seq:
        stmt = stmt.where(E.c.seq < before_seq)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def newest_events(conn: Connection, kind: str, limit: int) -> list[dict[str, Any]]:
    stmt = sa.select(E).where(E.c.kind == kind).order_by(E.c.seq.desc()).limit(limit)
    return [dict(r) for r in conn.execute(stmt).mappings()]


def applied_since(conn: Connection, since: str, limit: int = 5000) -> list[tuple[str, str, str]]:
    """(target, applied, logged) of each ``sync.applied`` record since ``since``: when the
    batch took effect and when its first change was logged (its propagation latency); at
    most ``limit`` records, the newest."""
    rows = conn.execute(
        sa.select(E.c.detail)
        .where(E.c.kind == "sync.applied", E.c.ts >= since)
        .order_by(E.c.seq.desc())
        .limit(limit)
    ).all()
    batches: list[tuple[str, int, str]] = []
    for (detail,) in rows:
        d = detail or {}
        target = d.get("target")
        for lo, _hi, at in d.get("batches") or [(d.get("first_seq"), None, d.get("applied"))]:
            if isinstance(target, str) and isinstance(lo, int) and isinstance(at, str):
                batches.append((target, lo, at))
    seqs = sorted({b[1] for b in batches})
    logged: dict[int, str] = {}
    for i in range(0, len(seqs), 500):
        chunk = seqs[i : i + 500]
        logged.update(
            (int(s), c)
            for s, c in conn.execute(sa.select(C.c.seq, C.c.created).where(C.c.seq.in_(chunk)))
        )
    return [(t, at, logged[lo]) for t, lo, at in batches if lo in logged]
