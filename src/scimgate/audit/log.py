"""Append audit events inside the caller's write transaction; read and verify them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.audit.chain import GENESIS_HASH, event_hash, first_broken
from scimgate.store import tables
from scimgate.store.db import AUDIT_HEAD, Sql, now_iso

SECRET_KEYS = frozenset({"password", "secret", "token"})
# What a client sends is stored bounded (the columns' sizes; PostgreSQL enforces them).
MAX_USER_AGENT_CHARS = 512
_MAX_ACTOR_CHARS = 128
_MAX_CLIENT_CHARS = 128
_MAX_REQUEST_ID_CHARS = 64


def _bounded(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None


@dataclass(frozen=True)
class Actor:
    """Who made a request: the token name and where it came from."""

    token: str | None = None
    client: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


SYSTEM = Actor(token="scimgate")


def redact(value: Any) -> Any:
    """Drop secrets (passwords, tokens) from anything about to be audited."""
    if isinstance(value, dict):
        return {
            k: ("[redacted]" if k.lower() in SECRET_KEYS else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def ensure_head(conn: Connection) -> None:
    if conn.execute(sa.select(tables.audit_head.c.id)).first() is None:
        conn.execute(tables.audit_head.insert().values(id=1, seq=0, hash=GENESIS_HASH))


def append(
    conn: Connection,
    kind: str,
    actor: Actor = SYSTEM,
    *,
    resource_type: str | None = None,
    resource_id: str | None = None,
    operation: str | None = None,
    detail: dict[str, Any] | None = None,
    ts: str | None = None,
) -> int:
    """Append one event in the caller's (write) transaction; returns its seq."""
    head = conn.info.get(AUDIT_HEAD)  # PostgreSQL: read when the write locked it
    if head is None:
        row = _READ_HEAD.run(conn).fetchone()
        head = (int(row[0]), row[1])
    seq, prev_hash = head
    event = {
        "seq": seq + 1,
        "ts": ts or now_iso(),
        "kind": kind,
        "actor": _bounded(actor.token, _MAX_ACTOR_CHARS),
        "client": _bounded(actor.client, _MAX_CLIENT_CHARS),
        "user_agent": _bounded(actor.user_agent, MAX_USER_AGENT_CHARS),
        "request_id": _bounded(actor.request_id, _MAX_REQUEST_ID_CHARS),
        "resource_type": resource_type,
        "resource_id": resource_id,
        "operation": operation,
        "detail": redact(detail or {}),
    }
    event["prev_hash"] = prev_hash
    event["hash"] = event_hash(prev_hash, event)
    params = [event[c] for c in _EVENT_COLUMNS]
    params[_EVENT_COLUMNS.index("detail")] = json.dumps(event["detail"])
    if conn.dialect.name == "postgresql":
        # One round trip: the event and the new head together.
        _APPEND_PG.run(conn, [*params, event["seq"], event["hash"]])
    else:
        _INSERT_EVENT.run(conn, params)
        _UPDATE_HEAD.run(conn, (event["seq"], event["hash"]))
    if AUDIT_HEAD in conn.info:
        conn.info[AUDIT_HEAD] = (event["seq"], event["hash"])
    return int(event["seq"])


# Hot path (every SCIM write): plain SQL on the DBAPI connection (store.db.Sql).
_EVENT_COLUMNS = ("seq", "ts", "kind", "actor", "client", "user_agent", "request_id",
                  "resource_type", "resource_id", "operation", "detail", "prev_hash", "hash")  # fmt: skip
_READ_HEAD = Sql("SELECT seq, hash FROM audit_head WHERE id = 1")
_INSERT_EVENT = Sql(
    f"INSERT INTO audit_events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS[:-3])}, ?, ?, ?)"
)
_UPDATE_HEAD = Sql("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1")
_APPEND_PG = Sql(
    "",
    f"WITH event AS (INSERT INTO audit_events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _EVENT_COLUMNS[:-3])}, CAST(? AS JSONB), ?, ?)) "
    "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1",
)


def head(conn: Connection) -> tuple[int, str]:
    """The chain's head: (seq of the last event, its hash); (0, genesis) when empty."""
    row = _READ_HEAD.run(conn).fetchone()
    return (int(row[0]), row[1]) if row is not None else (0, GENESIS_HASH)


def iter_events(
    conn: Connection, *, since: str | None = None, until: str | None = None, batch: int = 5000
) -> Iterator[dict[str, Any]]:
    t = tables.audit_events
    last = 0
    while True:
        q = sa.select(t).where(t.c.seq > last).order_by(t.c.seq).limit(batch)
        if since:
            q = q.where(t.c.ts >= since)
        if until:
            q = q.where(t.c.ts <= until)
        rows = conn.execute(q).mappings().all()
        if not rows:
            return
        for r in rows:
            yield dict(r)
        last = rows[-1]["seq"]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    broken_seq: int | None = None
    reason: str = ""


def verify(conn: Connection) -> VerifyResult:
    """Walk the whole chain; name the first event that does not hold."""
    prev = GENESIS_HASH
    count = 0
    window: list[dict[str, Any]] = []
    expected = 1
    for ev in iter_events(conn):
        window = [ev]
        bad = first_broken(window, prev) if ev["seq"] == expected else 0
        if bad is not None:
            reason = "missing or reordered event" if ev["seq"] != expected else "hash mismatch"
            return VerifyResult(
                False,
                count,
                broken_seq=expected if ev["seq"] != expected else ev["seq"],
                reason=reason,
            )
        prev = ev["hash"]
        expected += 1
        count += 1
    head = conn.execute(sa.select(tables.audit_head)).mappings().first()
    if head is not None and (head["seq"] != count or head["hash"] != prev):
        return VerifyResult(
            False,
            count,
            broken_seq=count + 1 if head["seq"] > count else count,
            reason="events after the last one present were deleted"
            if head["seq"] > count
            else "head does not match the last event",
        )
    return VerifyResult(True, count)


def current_state(conn: Connection) -> Any:
    """The directory now, from the resource tables (same shape as a replay of the trail)."""
    from scimgate.audit.replay import AgentState, DirectoryState, GroupState, UserState, _emails

    state = DirectoryState()
    u, g, m = tables.users, tables.groups, tables.members
    for r in conn.execute(sa.select(u.c.id, u.c.user_name, u.c.active, u.c.attrs)):
        state.users[r.id] = UserState(
            r.user_name, bool(r.active), _emails((r.attrs or {}).get("emails"))
        )
    for gid, name, ext in conn.execute(sa.select(g.c.id, g.c.display_name, g.c.external_id)):
        state.groups[gid] = GroupState(name, ext)
    for gid, mid in conn.execute(sa.select(m.c.group_id, m.c.member_id)):
        state.groups[gid].members.add(mid)
    a, links = tables.agents, tables.agent_links
    for r in conn.execute(sa.select(a.c.id, a.c.name, a.c.active, a.c.attrs)):
        kind = (r.attrs or {}).get("agentType")
        state.agents[r.id] = AgentState(
            r.name, bool(r.active), kind if isinstance(kind, str) else None
        )
    linked = sa.select(links.c.agent_id, links.c.other_id, links.c.relation).where(
        links.c.relation.in_(("owner", "parent"))
    )
    for aid, oid, relation in conn.execute(linked):
        if relation == "owner":
            state.agents[aid].owners.add(oid)
        else:
            state.agents[aid].parent = oid
    return state
