"""Desired HAProxy state and its change log (the outbox), written in the SCIM write's own
transaction: a 2xx SCIM response means the HAProxy effect is durable and on its way.

Does: store the desired map entries the caller computed, diff them against the stored ones
(the first owner of an identity keeps it), log every changed key with its deprovision flag,
and read the change log back (its one reader: the sync engine's followers).
Does not: decide what a user's entries are (``app.enforcement`` with the policy compiler).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.store import tables
from scimgate.store.db import Database, Sql, log_committed, now_iso

E, C = tables.map_entries, tables.change_log

# The per-write path (one user's few keys, inside every SCIM write) as plain statements:
# building and compiling the Core constructs cost more CPU than the database spends on them.
# The set-wise rebuild keeps Core's batched executemany.
_ENTRIES_OF_USER = Sql("SELECT identity_key, value FROM map_entries WHERE user_id = ?")
_KEY_OWNED = Sql("SELECT 1 FROM map_entries WHERE identity_key = ?")
_DELETE_KEY = Sql("DELETE FROM map_entries WHERE identity_key = ?")
_INSERT_KEY = Sql("INSERT INTO map_entries (identity_key, value, user_id) VALUES (?, ?, ?)")
_UPDATE_KEY = Sql("UPDATE map_entries SET value = ? WHERE identity_key = ?")
_LOG_CHANGE = Sql(
    "INSERT INTO change_log (identity_key, value, user_id, deprovision, created) "
    "VALUES (?, ?, ?, ?, ?) RETURNING seq"
)
_FEW = 32  # at most this many changes: one plain statement per row


@dataclass(frozen=True)
class MapChange:
    seq: int
    identity_key: str
    value: str | None  # None = delete
    user_id: str | None
    deprovision: bool


def _slugs(value: str | None) -> set[str]:
    return {s for s in (value or "").split(",") if s}


def is_deprovision(old: str | None, new: str | None) -> bool:
    """Losing the entry, or losing any policy group, is a deprovisioning."""
    if old is None:
        return False
    return new is None or not _slugs(old) <= _slugs(new)


def log_user_entries(
    conn: Connection, desired_by_user: Iterable[tuple[str, dict[str, str]]]
) -> list[MapChange]:
    """Store each user's desired entries (computed by the caller: ``app.enforcement``) and
    log every key that changed, in order. A user gone from the store has ``{}``."""
    diff = _EntryDiff(_StoredOwners(conn))
    for user_id, desired in desired_by_user:
        current = {k: v for k, v in _ENTRIES_OF_USER.run(conn, (user_id,))}
        diff.refresh(user_id, current, desired)
    return diff.write(conn, batch=500)


class _StoredOwners:
    """Which identity keys have an owner: the store's map_entries, as changed so far by the
    diff that uses it (the per-user path's counterpart of rebuild_entries' in-memory table)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.local: dict[str, str | None] = {}

    def __contains__(self, key: object) -> bool:
        if key in self.local:
            return self.local[key] is not None
        return _KEY_OWNED.run(self.conn, (key,)).fetchone() is not None

    def __setitem__(self, key: str, user_id: str) -> None:
        self.local[key] = user_id

    def __delitem__(self, key: str) -> None:
        self.local[key] = None


def rebuild_entries(
    conn: Connection, desired_by_user: Iterable[tuple[str, dict[str, str]]], batch: int = 2000
) -> list[MapChange]:
    """Replace every map entry by the desired ones (after a policy change); log only the
    differences.

    Set-wise: every map entry is read once, ``desired_by_user`` (every user in id order, as
    ``app.enforcement.rebuild_all`` computes it) is diffed against them in Python, then the
    writes go in batches of ``batch`` (deletes, inserts, updates, the change log). Entries
    whose user no longer exists are dropped after the users, in user id order: the result,
    order included, is that of :func:`log_user_entries` over every user in id order
    followed by the owners of those entries."""
    owner: dict[str, str] = {}  # identity key -> user id, kept current as users are diffed
    current_by_user: dict[str, dict[str, str]] = {}
    for key, value, user_id in conn.execute(sa.select(E.c.identity_key, E.c.value, E.c.user_id)):
        current_by_user.setdefault(user_id, {})[key] = value
        owner[key] = user_id
    diff = _EntryDiff(owner)
    for user_id, desired in desired_by_user:
        diff.refresh(user_id, current_by_user.pop(user_id, {}), desired)
    for user_id in sorted(current_by_user):  # entries whose user no longer exists
        diff.refresh(user_id, current_by_user[user_id], {})
    return diff.write(conn, batch)


class _EntryDiff:
    """The per-user diff rules, against an owner table (in memory for rebuild_all, the
    store for refresh_users): the changes in order, and the row writes that produce them."""

    def __init__(self, owner: dict[str, str] | _StoredOwners) -> None:
        self.owner = owner
        self.changes: list[dict[str, Any]] = []
        self.deletes: list[str] = []
        self.inserts: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []

    def refresh(self, user_id: str, current: dict[str, str], desired: dict[str, str]) -> None:
        for key in current:
            if key not in desired:
                self.deletes.append(key)
                del self.owner[key]
                self.changes.append(
                    {"identity_key": key, "value": None, "user_id": user_id, "deprovision": True}
                )
        for key, value in desired.items():
            old = current.get(key)
            if old == value:
                continue
            if old is None:
                if key in self.owner:
                    # Two users produce the same identity (e.g. one's e-mail is another's
                    # userName): the first owner keeps it; never grant one person's access
                    # to another.
                    continue
                self.owner[key] = user_id
                self.inserts.append({"identity_key": key, "value": value, "user_id": user_id})
            else:
                self.updates.append({"k": key, "v": value})
            self.changes.append(
                {
                    "identity_key": key,
                    "value": value,
                    "user_id": user_id,
                    "deprovision": is_deprovision(old, value),
                }
            )

    def write(self, conn: Connection, batch: int) -> list[MapChange]:
        if len(self.changes) <= _FEW:
            return self._write_few(conn)
        # Deletes first: a key one user lost may be inserted for another. An update is of
        # a key its user keeps, so it is neither deleted nor inserted here.
        for i in range(0, len(self.deletes), batch):
            conn.execute(E.delete().where(E.c.identity_key.in_(self.deletes[i : i + batch])))
        for i in range(0, len(self.inserts), batch):
            conn.execute(E.insert(), self.inserts[i : i + batch])
        update = (
            E.update().where(E.c.identity_key == sa.bindparam("k")).values(value=sa.bindparam("v"))
        )
        for i in range(0, len(self.updates), batch):
            conn.execute(update, self.updates[i : i + batch])
        out: list[MapChange] = []
        now = now_iso()
        insert = C.insert().returning(C.c.seq, sort_by_parameter_order=True)
        for i in range(0, len(self.changes), batch):
            rows = [{**ch, "created": now} for ch in self.changes[i : i + batch]]
            seqs = conn.execute(insert, rows).scalars().all()
            out.extend(
                MapChange(
                    int(seq), ch["identity_key"], ch["value"], ch["user_id"], ch["deprovision"]
                )
                for seq, ch in zip(seqs, rows, strict=True)
            )
        log_committed(conn, out)  # the sync engine wakes once the transaction commits
        return out

    def _write_few(self, conn: Connection) -> list[MapChange]:
        """:meth:`write` for the few rows of one SCIM write, in the same order (deletes,
        inserts, updates, then the change log in change order, one row at a time so that
        the seqs follow it)."""
        for key in self.deletes:
            _DELETE_KEY.run(conn, (key,))
        for row in self.inserts:
            _INSERT_KEY.run(conn, (row["identity_key"], row["value"], row["user_id"]))
        for row in self.updates:
            _UPDATE_KEY.run(conn, (row["v"], row["k"]))
        out: list[MapChange] = []
        now = now_iso()
        for ch in self.changes:
            seq = _LOG_CHANGE.run(
                conn,
                (ch["identity_key"], ch["value"], ch["user_id"], bool(ch["deprovision"]), now),
            ).fetchone()[0]
            out.append(
                MapChange(
                    int(seq), ch["identity_key"], ch["value"], ch["user_id"], ch["deprovision"]
                )
            )
        log_committed(conn, out)  # the sync engine wakes once the transaction commits
        return out


def desired_entries(conn: Connection) -> dict[str, str]:
    return {k: v for k, v in conn.execute(sa.select(E.c.identity_key, E.c.value))}


def head_seq(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(C.c.seq), 0))).scalar_one())


@dataclass(frozen=True)
class TimedChange:
    """A change-log row with the time its SCIM write logged it (ISO, UTC)."""

    change: MapChange
    created: str


# Fixed table and column names; the two parameters are bound by the driver.
_CHANGES_SQL = (
    f"SELECT {C.c.seq.name}, {C.c.identity_key.name}, {C.c.value.name}, {C.c.user_id.name},"
    f" {C.c.deprovision.name}, {C.c.created.name} FROM {C.name}"
    f" WHERE {C.c.seq.name} > {{p}} ORDER BY {C.c.seq.name} LIMIT {{p}}"
)


class ChangeLogReader:
    """The change log read by one thread (a follower), on a connection of its own: taken
    from the engine's pool once and detached from it, in autocommit mode (each read is one
    statement, so no snapshot or transaction is needed). A pool checkout and the rollback of
    its checkin cost more than the read itself, on every change's path. Not thread-safe."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._marker = "?" if db.engine.dialect.paramstyle == "qmark" else "%s"
        self._conn: Any = None

    def read(self, after: int, limit: int) -> list[TimedChange]:
        """:func:`read_changes` on this reader's connection (opened again after an error)."""
        if self._conn is None:
            fairy = self.db.engine.raw_connection()
            fairy.detach()  # ours until close(); the pool opens another in its place
            dbapi: Any = fairy.dbapi_connection
            if hasattr(dbapi, "autocommit"):
                dbapi.autocommit = True  # psycopg: no transaction left open between reads
            self._conn = fairy
        try:
            cur = self._conn.cursor()
            try:
                cur.execute(_CHANGES_SQL.format(p=self._marker), (after, limit))
                rows = cur.fetchall()
            finally:
                cur.close()
        except BaseException:
            self.close()
            raise
        return [TimedChange(MapChange(int(r[0]), r[1], r[2], r[3], bool(r[4])), r[5]) for r in rows]

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


def read_changes(db: Database, after: int, limit: int) -> list[TimedChange]:
    """The change log after seq ``after``, oldest first, at most ``limit`` rows: the one
    reader of the change log. On a pooled DBAPI connection, without SQLAlchemy's statement
    layer: the follower's poll is on every deprovision's path (~45 us instead of ~530 us per
    call on SQLite, measured). One statement, so no snapshot is needed."""
    marker = "?" if db.engine.dialect.paramstyle == "qmark" else "%s"
    raw = db.engine.raw_connection()
    try:
        cur = raw.cursor()
        try:
            cur.execute(_CHANGES_SQL.format(p=marker), (after, limit))
            rows = cur.fetchall()
        finally:
            cur.close()
    finally:
        raw.close()  # back to the pool, which rolls back whatever the driver opened
    return [TimedChange(MapChange(int(r[0]), r[1], r[2], r[3], bool(r[4])), r[5]) for r in rows]
