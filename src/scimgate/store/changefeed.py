"""Wake-ups for change-log followers in other processes: PostgreSQL LISTEN on the channel a
committing write notifies (``db.CHANGES_CHANNEL``).

A hint, never the guarantee (research/round2/04-scale-out.md: notifications are lost while
the listener is disconnected, do not pass transaction-pooling PgBouncer, and each notifying
commit takes a global lock): a follower reads the change log after every wake-up *and* at a
bounded poll interval, so a lost notification costs at most one poll interval.

Does: hold one autocommit connection that LISTENs, wait for a notification with a timeout,
reconnect after an error (reporting a wake-up, since notifications may have been lost).
Does not: read the change log (``outbox.ChangeLogReader``) or decide when to poll.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from scimgate.store.db import CHANGES_CHANNEL, Database

log = logging.getLogger("scimgate.store")


class ChangeWakeups:
    """LISTEN on one connection of its own (taken from the pool and detached). Used by one
    thread; :meth:`wait` returns True on a notification (or a reconnect), False on timeout.
    On SQLite (one process) there is nothing to listen to: :meth:`wait` only sleeps."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: Any = None
        self.supported = db.dialect == "postgresql"

    def _connect(self) -> Any:
        fairy = self.db.engine.raw_connection()
        fairy.detach()
        dbapi: Any = fairy.dbapi_connection
        dbapi.autocommit = True
        dbapi.execute(f"LISTEN {CHANGES_CHANNEL}")
        self._conn = fairy
        return dbapi

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a commit notification. Raises the driver's
        error when the database is unreachable (the caller backs off)."""
        if not self.supported:
            time.sleep(timeout)
            return False
        if self._conn is None:
            self._connect()
            return True  # (re)connected: whatever was notified meanwhile is lost, so look
        dbapi: Any = self._conn.dbapi_connection
        try:
            # Run the generator to its end (stop_after ends it after the first packet): a
            # generator left suspended keeps the connection's lock.
            received = sum(1 for _ in dbapi.notifies(timeout=timeout, stop_after=1))
        except BaseException:
            self.close()
            raise
        return received > 0

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception:  # a broken connection may fail to close; it is gone anyway
                log.debug("changefeed: close failed", exc_info=True)
