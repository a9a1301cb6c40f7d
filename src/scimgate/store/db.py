"""Engine creation and the write transaction (SQLite WAL or PostgreSQL)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("scimgate.store")


def now_iso() -> str:
    """Fixed-width UTC timestamp; sorts and compares correctly as text."""
    # isoformat is several times cheaper than strftime; same text ("…T13:21:02.123456Z").
    return datetime.now(UTC).isoformat(timespec="microseconds")[:26] + "Z"


def raw(conn: Connection) -> Any:
    """The DBAPI connection (sqlite3 or psycopg) under ``conn``, in ``conn``'s transaction.

    Hot-path statements run on it directly: building, cache-keying and compiling a
    SQLAlchemy Core construct costs more CPU than SQLite spends executing it.
    """
    return conn.connection.driver_connection


class Sql:
    """One hot-path statement as text with ``?`` placeholders (no ``%`` in the text), run on
    the DBAPI connection. PostgreSQL (psycopg) gets ``%s`` placeholders and prepares the
    statement itself after a few executions."""

    __slots__ = ("postgresql", "sqlite")

    def __init__(self, sqlite: str, postgresql: str | None = None) -> None:
        assert "%" not in sqlite and "%" not in (postgresql or "")
        self.sqlite = sqlite
        self.postgresql = (postgresql or sqlite).replace("?", "%s")

    def run(self, conn: Connection, params: Sequence[Any] = ()) -> Any:
        """Execute in ``conn``'s transaction; returns the DBAPI cursor."""
        text = self.sqlite if conn.dialect.name == "sqlite" else self.postgresql
        return raw(conn).execute(text, params)


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def make_engine(
    url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 8, max_overflow: int = 8
) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=max_overflow,
        )
        sync = sqlite_synchronous.upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"sqlite_synchronous: {sqlite_synchronous!r}")

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()
            # SQLite's built-in lower() folds ASCII only; caseExact=false filters and sorts
            # (displayName eq "élodie") need the same Unicode folding Python applies to the
            # values they are compared with (and PostgreSQL's lower() does).
            dbapi_conn.create_function("lower", 1, _unicode_lower, deterministic=True)
            # pysqlite's own transaction handling is disabled so that we can BEGIN IMMEDIATE
            # for writes (take the write lock up front: no SQLITE_BUSY upgrade deadlocks).
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            raw(conn).execute("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        return engine
    # A peer that vanished (a partition, a failover) must fail a read within seconds, not
    # after TCP's ~15 minutes of retransmissions: a follower blocked in a read is neither
    # applying nor failing over (libpq keepalives and tcp_user_timeout; unix sockets
    # ignore them).
    connect_args = {
        "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5,
        "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 10_000,
    }  # fmt: skip
    engine = sa.create_engine(url, pool_size=16, max_overflow=16, connect_args=connect_args)

    # Pre-ping, but only connections idle for a while: a ping is a round trip (a statement
    # for PostgreSQL to run) on every checkout otherwise, i.e. on every transaction. A
    # connection used within the last PING_IDLE_AFTER seconds is taken as alive; a server
    # restart in that window costs the requests that hit it (SQLAlchemy then invalidates
    # the pool's connections at the first disconnect error).
    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_AFTER:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception:
            alive = False
        if not alive:
            raise sa.exc.DisconnectionError("connection lost while idle")  # pool retries

    return engine


PING_IDLE_AFTER = 5.0  # seconds


# conn.info key: the audit head (seq, hash) as locked by this write transaction (PostgreSQL).
AUDIT_HEAD = "audit_head"
# conn.info key: the change-log rows this write transaction logged (``log_committed``).
LOGGED_CHANGES = "logged_changes"
_LOCK_AUDIT_HEAD = Sql("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
#: The PostgreSQL channel a write that logged changes notifies (payload-less) at its commit:
#: a wake-up hint for followers in other processes (``store.changefeed``), never relied on
#: for correctness (notifications are lost while a listener is away; followers poll).
CHANGES_CHANNEL = "scimgate_changes"
_NOTIFY_CHANGES = f"NOTIFY {CHANGES_CHANNEL}"


def _is_file_database(url: str) -> bool:
    database = sa.engine.make_url(url).database or ""
    return database not in ("", ":memory:") and "mode=memory" not in url


class FirstCheck:
    """The context of :meth:`Database.checked`."""

    __slots__ = ("check", "slot")

    def __init__(self, slot: threading.local, check: Callable[[Connection], None]) -> None:
        self.slot = slot
        self.check = check

    def __enter__(self) -> FirstCheck:
        self.slot.fn = self.check
        return self

    def __exit__(self, *exc: object) -> None:
        self.slot.fn = None

    def ran(self) -> bool:
        return getattr(self.slot, "fn", None) is None


def log_committed(conn: Connection, changes: Sequence[Any]) -> None:
    """Hand ``changes`` (change-log rows written in ``conn``'s write transaction) to the
    database's commit listeners once that transaction has committed (never if it rolls
    back)."""
    if changes:
        conn.info.setdefault(LOGGED_CHANGES, []).extend(changes)


class Database:
    """The engine plus the one write discipline every operation follows."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.engine = make_engine(url, sqlite_synchronous=sqlite_synchronous)
        self.dialect = self.engine.dialect.name
        # SQLite has one writer; serialising in-process avoids busy waits between our threads.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._first_check = threading.local()
        # _writers_lock: _writers, the write transactions begun (waiting for the writers'
        # lock or running) and not finished: a hint for the sync engine's group commit.
        self._writers_lock = threading.Lock()
        self._writers = 0
        # SQLite only: short reads may run on the event loop's thread (``inline``), on
        # connections of their own so that they never wait for a worker thread's connection.
        # A WAL reader does not wait for the writer, so such a read does not block the loop.
        self._inline = threading.local()
        self._inline_engine = (
            make_engine(url, sqlite_synchronous=sqlite_synchronous, pool_size=1, max_overflow=2)
            if self.dialect == "sqlite" and _is_file_database(url)
            else None
        )
        self._commit_listeners: list[Callable[[list[Any]], None]] = []

    def on_commit(self, listener: Callable[[list[Any]], None]) -> None:
        """Call ``listener`` with the change-log rows of every write transaction that logged
        some (``log_committed``), once it has committed, on the writer's thread. The store
        knows nothing of who listens (the sync engine wakes its followers, wired by
        ``instance.wiring``); a listener must be cheap and must not raise."""
        self._commit_listeners.append(listener)

    def _committed(self, changes: list[Any]) -> None:
        for listener in self._commit_listeners:
            try:
                listener(changes)
            except Exception:
                # Committed: the write stands. A listener only wakes the sync engine early;
                # its followers read the change log anyway.
                log.exception("commit listener failed after a committed write")

    @property
    def inline_reads(self) -> bool:
        """Whether short reads may run on the calling (event loop) thread."""
        return self._inline_engine is not None

    @contextmanager
    def inline(self) -> Iterator[None]:
        """Reads opened by this thread inside the block use the inline connections."""
        if self._inline_engine is None:
            raise RuntimeError("inline reads are for SQLite only")
        self._inline.on = True
        try:
            yield
        finally:
            self._inline.on = False

    def checked(self, check: Callable[[Connection], None]) -> FirstCheck:
        """Run ``check`` at the start of the first transaction this thread opens inside the
        block (the request's token check, atomic with the work it guards; if it raises, the
        transaction rolls back). ``.ran()`` tells whether it has run."""
        return FirstCheck(self._first_check, check)

    def _run_first_check(self, conn: Connection) -> None:
        check = getattr(self._first_check, "fn", None)
        if check is not None:
            self._first_check.fn = None
            check(conn)

    @contextmanager
    def write(self, *, background: bool = False) -> Iterator[Connection]:
        """One write transaction. Everything inside commits together or not at all.

        Writers are serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: a row lock on the audit
        head taken first), which gives the audit chain and the change log their commit order.
        ``background``: bookkeeping whose commit nobody waits for (the sync engine's own
        records), not counted in :attr:`writes_in_progress`.
        """
        if getattr(self._inline, "on", False):
            raise RuntimeError("writes never run inline (on the event loop)")
        logged: list[Any] = []
        if not background:
            with self._writers_lock:
                self._writers += 1
        try:
            with self._write_transaction(logged) as conn:
                yield conn
        finally:
            if not background:
                with self._writers_lock:
                    self._writers -= 1
        # Committed (an exception above skips this), the writer lock released, and no
        # longer counted as under way: a listener sees only the writes still coming.
        if logged:
            self._committed(logged)

    @property
    def writes_in_progress(self) -> int:
        """Write transactions of this process begun and not finished (waiting for the
        writers' lock or running): changes that will commit soon (a hint, no guarantee)."""
        return self._writers

    @contextmanager
    def _write_transaction(self, logged: list[Any]) -> Iterator[Connection]:
        """The transaction of :meth:`write`; on commit, ``logged`` holds its changes."""
        if self._write_lock is not None:
            with self._write_lock, self.engine.connect() as conn:
                conn.info["write"] = True
                try:
                    with conn.begin():
                        self._run_first_check(conn)
                        yield conn
                        logged.extend(conn.info.pop(LOGGED_CHANGES, ()))
                finally:
                    conn.info.pop("write", None)
                    conn.info.pop(LOGGED_CHANGES, None)
        else:
            with self.engine.begin() as conn:
                # The lock also reads the head, so the audit append needs no second read.
                head = _LOCK_AUDIT_HEAD.run(conn).fetchone()
                if head is not None:
                    conn.info[AUDIT_HEAD] = (int(head[0]), head[1])
                try:
                    self._run_first_check(conn)
                    yield conn
                    logged.extend(conn.info.pop(LOGGED_CHANGES, ()))
                    if logged:
                        # Delivered at commit, never on rollback. Writers are already
                        # serialised, so NOTIFY's commit-time lock costs no extra wait.
                        raw(conn).execute(_NOTIFY_CHANGES)
                finally:
                    conn.info.pop(AUDIT_HEAD, None)
                    conn.info.pop(LOGGED_CHANGES, None)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        inline = self._inline_engine is not None and getattr(self._inline, "on", False)
        engine = self._inline_engine if inline and self._inline_engine else self.engine
        with engine.connect() as conn, conn.begin():
            self._run_first_check(conn)
            yield conn

    def reachable(self) -> bool:
        """Whether the database answers a trivial query (readiness)."""
        try:
            with self.read() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception:
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()
        if self._inline_engine is not None:
            self._inline_engine.dispose()
