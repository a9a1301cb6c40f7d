"""The change log's wake-up across processes (``store.changefeed``): a committed write that
logged changes notifies, a rolled-back one does not, and a listener that lost its
connection reports a wake-up on reconnect (what was notified meanwhile is lost)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from scimgate.store import migrate, tables
from scimgate.store.changefeed import ChangeWakeups
from scimgate.store.db import Database, log_committed
from scimgate.store.outbox import MapChange

pytestmark = pytest.mark.postgres


def _log_one(db: Database, key: str, *, fail: bool = False) -> None:
    with db.write() as conn:
        seq = conn.execute(
            tables.change_log.insert().returning(tables.change_log.c.seq),
            {"identity_key": key, "value": None, "user_id": None, "deprovision": True,
             "created": "2026-01-01T00:00:00.000000Z"},
        ).scalar_one()  # fmt: skip
        log_committed(conn, [MapChange(int(seq), key, None, None, True)])
        if fail:
            raise RuntimeError("roll back")


def test_commit_notifies_rollback_does_not_and_reconnect_wakes(pg_db_url: str) -> None:
    writer, listener_db = Database(pg_db_url), Database(pg_db_url)
    migrate.upgrade(writer)
    wakeups = ChangeWakeups(listener_db)
    try:
        assert wakeups.wait(0.1) is True  # the first call connects: a wake-up
        assert wakeups.wait(0.2) is False  # nothing committed
        _log_one(writer, "E" * 64)
        assert wakeups.wait(2.0) is True
        assert wakeups.wait(0.2) is False  # one notification, one wake-up
        with pytest.raises(RuntimeError):
            _log_one(writer, "F" * 64, fail=True)
        assert wakeups.wait(0.3) is False  # NOTIFY is transactional
        with writer.write() as conn:  # a write without change-log rows: no wake-up
            conn.execute(sa.text("SELECT 1"))
        assert wakeups.wait(0.3) is False
        # The listener's backend killed (a server restart, a failover): the next wait
        # raises, the one after reconnects and reports a wake-up.
        with writer.engine.begin() as conn:
            conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            ))  # fmt: skip
        with pytest.raises(Exception):  # noqa: B017 - the driver's OperationalError
            for _ in range(20):
                wakeups.wait(0.1)
        assert wakeups.wait(0.1) is True
        _log_one(writer, "A" * 64)
        assert wakeups.wait(2.0) is True
    finally:
        wakeups.close()
        writer.dispose()
        listener_db.dispose()
