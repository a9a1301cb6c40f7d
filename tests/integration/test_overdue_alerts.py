"""Overdue deprovisions on a real SQLite store: each is told once, ten a pass on their own
line and the rest in one summary line, past the first thousand too (a policy change can
deprovision a million identities while a target is down)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from scimgate.config import Settings
from scimgate.metrics import Metrics
from scimgate.store import migrate, tables
from scimgate.store.db import Database
from scimgate.sync.housekeeping import ALERT_LINES, Housekeeper
from scimgate.sync.mapfiles import MapFiles
from scimgate.sync.waiters import Waiters

TS = "%Y-%m-%dT%H:%M:%S.%fZ"


def _deprovisions(db: Database, n: int, age_seconds: float) -> None:
    created = (datetime.now(UTC) - timedelta(seconds=age_seconds)).strftime(TS)
    with db.write() as conn:
        conn.execute(
            tables.change_log.insert(),
            [
                {"identity_key": f"{i:064X}", "value": None, "user_id": "u",
                 "deprovision": True, "created": created}
                for i in range(n)
            ],
        )  # fmt: skip


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'scimgate.db'}")
    migrate.upgrade(db)
    yield db
    db.dispose()


def test_every_overdue_deprovision_is_told_once_past_the_first_thousand(
    sqlite_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        base_dir=Path("/nonexistent"), database_url=sqlite_db.url, deprovision_alert_seconds=1.0
    )
    waiters = Waiters(["down"])  # a target that confirmed nothing
    keeper = Housekeeper(
        settings, sqlite_db, Metrics(), waiters, MapFiles(sqlite_db), threading.Event()
    )
    _deprovisions(sqlite_db, 2500, age_seconds=5)
    with sqlite_db.read() as conn:
        seqs = [r[0] for r in conn.execute(sa.select(tables.change_log.c.seq))]
    caplog.set_level(logging.ERROR, logger="scimgate.sync")
    for _ in range(4):  # a pass tells at most 1000 (one bounded read)
        keeper.once()
    each = [r.seq for r in caplog.records if r.getMessage().startswith("sync: deprovision not")]
    more = [r for r in caplog.records if r.getMessage().startswith("sync: more deprovisions")]
    assert len(each) == len(set(each))
    assert len(each) == 3 * ALERT_LINES  # three passes found new ones, the fourth none
    assert [m.count for m in more] == [1000 - ALERT_LINES, 1000 - ALERT_LINES, 500 - ALERT_LINES]
    told = set(each) | {s for m in more for s in range(m.first_seq, m.last_seq + 1)}
    assert told == set(seqs)
    assert all(m.targets == ["down"] for m in more)
    # the gauge: how many are overdue (read bounded at 1000)
    assert keeper.metrics.unconfirmed._value.get() == 1000
    # once confirmed everywhere, nothing is overdue and nothing more is told
    waiters.advanced("down", max(seqs))
    caplog.clear()
    keeper.once()
    assert keeper.metrics.unconfirmed._value.get() == 0
    assert not caplog.records
