"""The fleet's node table: one row per `scimgate agent` (one HAProxy node), its heartbeat,
its applied cursor, its HAProxy worker, and whether it holds its HAProxy fail-closed.

Does: upsert a node's beat (the agent's only write; no writer lock: a beat touches neither
the audit chain nor the change log, so it never waits behind SCIM writes), read the nodes
with their heartbeat age measured on the database's clock, and the oldest change a node has
not applied (its lag).
Does not: decide what is live or late (``app.fleet``), or run the agent (``instance.agent``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from scimgate.store import tables
from scimgate.store.db import Database, now_iso

N, C = tables.fleet_nodes, tables.change_log


@dataclass(frozen=True)
class NodeBeat:
    """What an agent reports about its node at each beat."""

    name: str
    cursor: int
    worker_pid: int | None
    haproxy_version: str | None
    reachable: bool
    fail_closed: bool
    last_error: str | None


@dataclass(frozen=True)
class NodeRow:
    name: str
    cursor: int
    worker_pid: int | None
    haproxy_version: str | None
    reachable: bool
    fail_closed: bool
    last_error: str | None
    started: str
    heartbeat: str
    heartbeat_age: float  # seconds, on the database's clock


def _db_epoch(conn: Connection) -> float:
    """Now on the database's clock (PostgreSQL; SQLite is one host: this process's clock)."""
    if conn.dialect.name == "postgresql":
        return float(
            conn.exec_driver_sql("SELECT EXTRACT(EPOCH FROM clock_timestamp())").scalar_one()
        )
    return time.time()


def beat(db: Database, node: NodeBeat, *, started: bool = False) -> None:
    """Record ``node``'s state and heartbeat now. ``started``: a new agent process (resets
    ``started``). One short transaction outside the writers' lock."""
    with db.engine.begin() as conn:
        now = _db_epoch(conn)
        stamp = now_iso()
        values: dict[str, Any] = {
            "name": node.name, "cursor": node.cursor, "worker_pid": node.worker_pid,
            "haproxy_version": node.haproxy_version, "reachable": node.reachable,
            "fail_closed": node.fail_closed, "last_error": node.last_error,
            "heartbeat": stamp, "heartbeat_epoch": now,
        }  # fmt: skip
        insert: Any = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(N)
        update = {k: v for k, v in values.items() if k != "name"}
        if started:
            update["started"] = stamp
        stmt = insert.values(**values, started=stamp).on_conflict_do_update(
            index_elements=[N.c.name], set_=update
        )
        conn.execute(stmt)


def list_nodes(conn: Connection) -> list[NodeRow]:
    now = _db_epoch(conn)
    rows = conn.execute(sa.select(N).order_by(N.c.name)).mappings().all()
    return [_node_row(r, now) for r in rows]


def _node_row(r: Any, now: float) -> NodeRow:
    return NodeRow(
        r["name"], int(r["cursor"]), r["worker_pid"], r["haproxy_version"],
        bool(r["reachable"]), bool(r["fail_closed"]), r["last_error"], r["started"],
        r["heartbeat"], max(0.0, now - float(r["heartbeat_epoch"])),
    )  # fmt: skip


def forget_node(db: Database, name: str) -> bool:
    """Remove a decommissioned node (it no longer counts anywhere); False if unknown."""
    with db.engine.begin() as conn:
        return bool(conn.execute(N.delete().where(N.c.name == name)).rowcount)


def oldest_unapplied_deprovision(conn: Connection, cursor: int) -> tuple[int, str] | None:
    """The first deprovision after ``cursor`` (seq, created), or None: what a node that
    stopped at ``cursor`` still lets through."""
    row = conn.execute(
        sa.select(C.c.seq, C.c.created)
        .where(C.c.seq > cursor, C.c.deprovision.is_(True))
        .order_by(C.c.seq)
        .limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def mark_stopped(db: Database, name: str) -> None:
    """A node whose agent stopped cleanly: no longer live (heartbeat at the epoch), its row
    kept for `status` and the audit."""
    with db.engine.begin() as conn:
        conn.execute(N.update().where(N.c.name == name).values(heartbeat_epoch=0.0))
