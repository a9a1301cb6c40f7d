"""What the sync engine reads from and records in the store: consistent snapshots of the
desired state, per-target cursors, confirmations and audit events. (The change log is read
by ``store.outbox.read_changes``; status from the store alone is ``sync.status``.)"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.audit import log as audit
from scimgate.haproxy import EntryValidator, PayloadBody, PendingBodies, UnsafeRuntimeArgument
from scimgate.policy.compiler import VALID_SHARD_COUNTS
from scimgate.store import tables
from scimgate.store.db import Database
from scimgate.store.outbox import desired_entries, head_seq
from scimgate.sync.apply import ENTRY_VALIDATOR, bucket_lines

log = logging.getLogger("scimgate.sync")

T, C, CONF = tables.targets, tables.change_log, tables.confirmations

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def parse_ts(text: str) -> datetime:
    """A TS_FORMAT timestamp (UTC, ``Z``) as an aware datetime."""
    if len(text) == 27 and text[-1] == "Z" and text[10] == "T":
        # fromisoformat: ~20x faster than strptime (per change on the follower's path).
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    return datetime.strptime(text, TS_FORMAT).replace(tzinfo=UTC)


def age_seconds(text: str, now: datetime | None = None) -> float:
    return ((now or datetime.now(UTC)) - parse_ts(text)).total_seconds()


class Snapshot:
    """The desired entries exactly as of change ``seq`` (read in one transaction).

    ``entries`` may be given later by ``load`` (called once, on first use): a resync that
    already holds the validated payload bodies builds the dict only if someone asks."""

    __slots__ = ("_entries", "_load", "seq")

    def __init__(
        self,
        seq: int,
        entries: dict[str, str] | None = None,
        *,
        load: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        if (entries is None) == (load is None):
            raise TypeError("Snapshot needs exactly one of entries and load")
        self.seq = seq
        self._entries = entries
        self._load = load

    @property
    def entries(self) -> dict[str, str]:
        if self._entries is None:
            assert self._load is not None
            self._entries = self._load()
            self._load = None
        return self._entries

    def __repr__(self) -> str:
        loaded = "not loaded" if self._entries is None else f"{len(self._entries)} entries"
        return f"Snapshot(seq={self.seq}, {loaded})"


@contextmanager
def snapshot_read(db: Database) -> Iterator[Connection]:
    """A read transaction whose statements all see one snapshot (SQLite WAL reads already
    do; PostgreSQL's default READ COMMITTED would not)."""
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            yield conn


def read_snapshot(db: Database) -> Snapshot:
    with snapshot_read(db) as conn:
        seq = head_seq(conn)
        return Snapshot(seq, _desired_entries_fast(conn))


def _desired_entries_fast(conn: Connection) -> dict[str, str]:
    """``outbox.desired_entries`` without a SQLAlchemy Row per entry (1M rows: ~1 µs each
    saved): the driver's own cursor, in the same transaction, rows straight into a dict."""
    try:
        dbapi = conn.connection.dbapi_connection
    except AttributeError:
        dbapi = None
    if dbapi is None:
        return desired_entries(conn)
    cur = dbapi.cursor()
    try:
        cur.execute(_ENTRIES_SQL)
        return dict(cur.fetchall())
    finally:
        cur.close()


# Fixed table and column names, no parameters: the same statement on every dialect.
_ENTRIES_SQL = (
    f"SELECT {tables.map_entries.c.identity_key.name}, {tables.map_entries.c.value.name} "
    f"FROM {tables.map_entries.name}"
)


@dataclass(frozen=True)
class ResyncPayloads:
    """The desired state as of change ``seq``, as one payload body per shard; the bodies
    are checked as they are asked for or stepped (asking for one that failed raises
    :class:`UnsafeRuntimeArgument`)."""

    seq: int
    bodies: PendingBodies

    @property
    def entries(self) -> int:
        return sum(self.bodies.counts)

    def snapshot(self) -> Snapshot:
        """The same state as a :class:`Snapshot` (its dict built only if used)."""
        return Snapshot(self.seq, load=lambda: entries_of_bodies(self.bodies.wait()))


def read_resync_payloads(
    db: Database, shards: int, validator: EntryValidator = ENTRY_VALIDATOR
) -> ResyncPayloads | None:
    """Every desired entry of one snapshot as validated ``key value`` payload bodies, one per
    shard (``shard_of``: the key's leading 1 or 2 hex digits), or None when this bulk path
    cannot vouch for them (an entry outside the allow-lists, a value holding an LF, a
    driver without the aggregate): the caller then takes the per-entry path
    (:func:`read_snapshot` + ``valid_entries``), which drops and logs the culprits.

    The database concatenates the lines (one C-level aggregate instead of 1M Python row
    tuples); Python splits them once and buckets them by prefix; each shard's body is then
    checked in C-level passes while earlier ones stream (``PendingBodies``). The line
    count must equal the row count, so a value carrying an LF (which would read as an
    extra, valid-looking line) sends the whole read to the per-entry path instead."""
    if shards not in VALID_SHARD_COUNTS:
        raise ValueError(f"shards must be one of {VALID_SHARD_COUNTS}")
    try:
        with snapshot_read(db) as conn:
            seq = head_seq(conn)
            got = _entry_lines(conn, db.dialect)
    except Exception:  # e.g. over SQLite's string length limit: the per-entry path copes
        log.warning("sync: bulk read of the desired state failed", exc_info=True)
        return None
    if got is None:
        return None
    rows, blob = got
    try:
        bodies = bucket_lines(blob, rows, shards, validator)
    except UnsafeRuntimeArgument:
        return None
    return ResyncPayloads(seq, bodies)


def _entry_lines(conn: Connection, dialect: str) -> tuple[int, bytes] | None:
    """(row count, every entry as ``key value`` LF-terminated lines, in no order), with
    the driver's own cursor in the caller's transaction; None for a dialect without it."""
    if dialect not in ("sqlite", "postgresql"):
        return None
    lf = "char(10)" if dialect == "sqlite" else "chr(10)"
    agg = "group_concat" if dialect == "sqlite" else "string_agg"
    E = tables.map_entries
    # Fixed names and literals only; no parameters. In no order: ordering by the key walks
    # the primary key's index and fetches each row (measured 3.0-4.5 s vs 0.56 s at 1M on
    # SQLite); the map files' writer sorts in small pieces instead (mapfiles._sorted_file).
    sql = (
        f"SELECT count(*), {agg}({E.c.identity_key.name} || ' ' || {E.c.value.name} || {lf}, '')"
        f" FROM {E.name}"
    )

    try:
        dbapi = conn.connection.dbapi_connection
    except AttributeError:
        return None
    if dbapi is None:
        return None
    cur = dbapi.cursor()
    try:
        cur.execute(sql)
        row = cur.fetchone()
    finally:
        cur.close()
    if row is None:
        return None
    rows, text = int(row[0]), row[1] or ""
    try:
        blob = text.encode("ascii") if isinstance(text, str) else bytes(text)
    except UnicodeEncodeError:
        return None
    return rows, blob


def entries_of_bodies(bodies: Sequence[PayloadBody]) -> dict[str, str]:
    """Parse validated bodies back into key -> value (one ``key value`` per line)."""
    out: dict[str, str] = {}
    for body in bodies:
        text = body.data.decode("ascii")
        out.update(line.split(" ", 1) for line in text.splitlines())  # type: ignore[misc]
    return out


#: Beyond this many changed keys an incremental map-file write is no cheaper than a full one.
INCREMENTAL_LIMIT = 50_000


def keys_changed_between(db: Database, after: int, upto: int) -> list[str] | None:
    """Distinct keys changed in (after, upto] of the change log; None when there are more
    than INCREMENTAL_LIMIT (the caller then rewrites everything)."""
    C = tables.change_log
    with db.read() as conn:
        rows = conn.execute(
            sa.select(C.c.identity_key)
            .where(C.c.seq > after, C.c.seq <= upto)
            .limit(INCREMENTAL_LIMIT + 1)
        ).all()
    if len(rows) > INCREMENTAL_LIMIT:
        return None
    return list({r[0] for r in rows})


def read_entries_of(db: Database, keys: Sequence[str]) -> dict[str, str | None]:
    """Current desired value of each key (None when it has no entry)."""
    E = tables.map_entries
    out: dict[str, str | None] = dict.fromkeys(keys)
    with db.read() as conn:
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            for k, v in conn.execute(
                sa.select(E.c.identity_key, E.c.value).where(E.c.identity_key.in_(chunk))
            ):
                out[k] = v
    return out


def read_shard_entries(db: Database, shard: int, shards: int) -> dict[str, str]:
    """Desired entries of one shard: keys are uppercase hex, so a shard is a key range
    (its 1 or 2 leading digits) and the primary-key index serves it."""
    E = tables.map_entries
    with db.read() as conn:
        if shards == 1:
            rows = conn.execute(sa.select(E.c.identity_key, E.c.value))
        else:
            width = 1 if shards == 16 else 2
            low = f"{shard:0{width}X}"
            high = low[:-1] + chr(ord(low[-1]) + 1)
            key: Any = E.c.identity_key
            if conn.dialect.name == "postgresql":
                key = key.collate("C")  # byte order, whatever the database's locale
            rows = conn.execute(
                sa.select(E.c.identity_key, E.c.value).where(key >= low, key < high)
            )
        return {k: v for k, v in rows}


# --------------------------------------------------------------------------- targets


def ensure_targets(db: Database, names: Sequence[str]) -> None:
    with db.write(background=True) as conn:
        have = {r[0] for r in conn.execute(sa.select(T.c.name))}
        for name in names:
            if name not in have:
                conn.execute(T.insert().values(name=name, cursor=0))


def stored_cursor(conn: Connection, target: str) -> int:
    row = conn.execute(sa.select(T.c.cursor).where(T.c.name == target)).first()
    return int(row[0]) if row is not None else 0


def _upsert_target(conn: Connection, target: str, **values: Any) -> None:
    if conn.execute(T.update().where(T.c.name == target).values(**values)).rowcount == 0:
        conn.execute(T.insert().values(name=target, **{"cursor": 0, **values}))


def _confirm_deprovisions(
    conn: Connection, target: str, after: int, upto: int, applied: str
) -> int:
    """Confirmation rows for every deprovision in (after, upto] that has none yet."""
    if upto <= after:
        return 0
    seqs = [
        r[0]
        for r in conn.execute(
            sa.select(C.c.seq).where(C.c.seq > after, C.c.seq <= upto, C.c.deprovision.is_(True))
        )
    ]
    if not seqs:
        return 0
    have = {
        r[0]
        for r in conn.execute(
            # a range, not IN (seqs): a policy change can deprovision a million identities
            # at once, past SQLite's bound on parameters per statement
            sa.select(CONF.c.seq).where(
                CONF.c.target == target, CONF.c.seq > after, CONF.c.seq <= upto
            )
        )
    }
    rows = [{"seq": s, "target": target, "applied": applied} for s in seqs if s not in have]
    if rows:
        conn.execute(CONF.insert(), rows)
    return len(rows)


@dataclass(frozen=True)
class AppliedBatch:
    """A confirmed batch, as the follower hands it to the recorder."""

    target: str
    first_seq: int
    last_seq: int
    set_keys: Sequence[str]
    deleted_keys: Sequence[str]
    applied: str
    entries: int | None


def record_applied(
    db: Database,
    target: str,
    *,
    first_seq: int,
    last_seq: int,
    set_keys: Sequence[str],
    deleted_keys: Sequence[str],
    applied: str,
    entries: int | None,
) -> None:
    """One transaction: advance the cursor, confirm the batch's deprovisions, audit it."""
    record_applied_batches(
        db,
        [AppliedBatch(target, first_seq, last_seq, set_keys, deleted_keys, applied, entries)],
    )


def record_applied_batches(db: Database, batches: Sequence[AppliedBatch]) -> None:
    """Group commit of confirmed batches (of any targets, in the order confirmed): one
    transaction, in it per target one cursor update, one pass over the deprovisions the
    batches cover (each confirmation row with the time of the batch that applied it) and
    one ``sync.applied`` audit event for the target's batches: ``first_seq`` of the first,
    ``last_seq`` and ``applied`` of the last (a change is reported in effect at the latest
    then; its own batch's time is in ``batches`` as [first_seq, last_seq, applied] when
    there are several, and a deprovision's in its confirmation row)."""
    if not batches:
        return
    by_target: dict[str, list[AppliedBatch]] = {}
    for batch in batches:
        by_target.setdefault(batch.target, []).append(batch)
    with db.write(background=True) as conn:
        for target, own in by_target.items():
            before = stored_cursor(conn, target)
            first, last = own[0], own[-1]
            _upsert_target(
                conn, target, cursor=last.last_seq, entries=last.entries, last_error=None
            )
            confirmed = _confirm_batches(conn, target, before, own)
            set_keys = [k for b in own for k in b.set_keys]
            deleted_keys = [k for b in own for k in b.deleted_keys]
            detail: dict[str, Any] = {
                "target": target,
                "first_seq": first.first_seq,
                "last_seq": last.last_seq,
                "set": len(set_keys),
                "deleted": len(deleted_keys),
                "set_keys": set_keys,
                "deleted_keys": deleted_keys,
                "deprovisions_confirmed": confirmed,
                "applied": last.applied,
            }
            if len(own) > 1:
                detail["batches"] = [[b.first_seq, b.last_seq, b.applied] for b in own]
            audit.append(conn, "sync.applied", detail=detail)


def _confirm_batches(
    conn: Connection, target: str, before: int, batches: Sequence[AppliedBatch]
) -> int:
    """Confirmation rows for every deprovision the batches cover that has none yet (what
    :func:`_confirm_deprovisions` does per batch, in two reads and one insert). A seq at or
    below a batch's ``last_seq`` and above the previous one's gets that batch's time; the
    first batch also covers anything between the stored cursor and its ``first_seq``.
    Returns how many rows were written."""
    after = min(before, batches[0].first_seq - 1)
    upto = batches[-1].last_seq
    if upto <= after:
        return 0
    seqs = [
        r[0]
        for r in conn.execute(
            sa.select(C.c.seq).where(C.c.seq > after, C.c.seq <= upto, C.c.deprovision.is_(True))
        )
    ]
    if not seqs:
        return 0
    have = {
        r[0]
        for r in conn.execute(
            # a range, not IN (seqs): a policy change can deprovision a million identities
            # at once, past SQLite's bound on parameters per statement
            sa.select(CONF.c.seq).where(
                CONF.c.target == target, CONF.c.seq > after, CONF.c.seq <= upto
            )
        )
    }
    rows: list[dict[str, Any]] = []
    i = 0
    for seq in sorted(s for s in seqs if s not in have):
        while i < len(batches) - 1 and seq > batches[i].last_seq:
            i += 1
        rows.append({"seq": seq, "target": target, "applied": batches[i].applied})
    if rows:
        conn.execute(CONF.insert(), rows)
    return len(rows)


def record_resync(
    db: Database,
    target: str,
    *,
    reason: str,
    seq: int,
    entries: int,
    seconds: float,
    shards: int,
    applied: str,
) -> None:
    """One transaction: cursor = the snapshot's seq, confirmations for the deprovisions
    the resync carried, last_resync, and the ``sync.resync`` audit event."""
    with db.write(background=True) as conn:
        before = stored_cursor(conn, target)
        _upsert_target(
            conn, target, cursor=seq, entries=entries, last_resync=applied, last_error=None
        )
        confirmed = _confirm_deprovisions(conn, target, before, seq, applied)
        audit.append(
            conn,
            "sync.resync",
            detail={
                "target": target,
                "reason": reason,
                "seq": seq,
                "entries": entries,
                "shards": shards,
                "seconds": round(seconds, 4),
                "deprovisions_confirmed": confirmed,
                "applied": applied,
            },
        )


def record_drift(
    db: Database, target: str, *, source: str, missing: int, extra: int, wrong: int, seq: int
) -> None:
    with db.write(background=True) as conn:
        audit.append(
            conn,
            "sync.drift",
            detail={
                "target": target,
                "source": source,
                "seq": seq,
                "missing": missing,
                "extra": extra,
                "wrong": wrong,
            },
        )


def record_drift_check(db: Database, target: str, when: str) -> None:
    with db.write(background=True) as conn:
        _upsert_target(conn, target, last_drift_check=when)


def record_error(db: Database, target: str, error: str | None) -> None:
    with db.write(background=True) as conn:
        _upsert_target(conn, target, last_error=error[:2000] if error else None)


def record_cutter_start(db: Database, target: str, when: str) -> None:
    """A cutter started: its count of cut streams starts from 0 (as the process's counter)."""
    with db.write(background=True) as conn:
        _upsert_target(conn, target, sessions_cut=0, sessions_cut_since=when)


def record_sessions_cut(conn: Connection, target: str, count: int, when: str) -> None:
    """``count`` more streams cut (in the transaction that audits them)."""
    counted = sa.func.coalesce(T.c.sessions_cut, 0) + count
    update = T.update().where(T.c.name == target)
    if conn.execute(update.values(sessions_cut=counted, last_session_cut=when)).rowcount == 0:
        conn.execute(
            T.insert().values(name=target, cursor=0, sessions_cut=count, last_session_cut=when)
        )


def record_sweep(db: Database, target: str, when: str, result: str) -> None:
    with db.write(background=True) as conn:
        _upsert_target(
            conn, target, last_session_sweep=when, last_session_sweep_result=result[:500]
        )
