"""The node table as the API role reads it (app/fleet.py over store/nodes.py), on SQLite:
read-your-writes waits for every live node and only for live ones; the lag monitor alerts
once per episode (a log line and a counter), and clears when the node catches up."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from scimgate.app.fleet import FleetMonitor, FleetPropagation, node_status
from scimgate.metrics import Metrics
from scimgate.store import migrate, nodes, tables
from scimgate.store.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate.upgrade(database)
    return database


def _beat(db: Database, name: str, cursor: int) -> None:
    nodes.beat(db, nodes.NodeBeat(name, cursor, 4242, "2.6.12", True, False, None), started=True)


def _age(db: Database, name: str, seconds: float) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            tables.fleet_nodes.update()
            .where(tables.fleet_nodes.c.name == name)
            .values(heartbeat_epoch=tables.fleet_nodes.c.heartbeat_epoch - seconds)
        )


def test_waits_for_every_live_node_and_only_live_ones(db: Database) -> None:
    # poll_interval 0: every look reads the table (a view up to poll_interval old is the
    # product's trade-off; this test changes the table faster than that).
    fleet = FleetPropagation(db, live_seconds=5.0, poll_interval=0.0)
    assert fleet.wait_confirmed_sync(7, 0.05)  # no node at all: nothing to wait for
    _beat(db, "a", 5)
    _beat(db, "b", 3)
    assert fleet.wait_confirmed_sync(3, 0.2)
    assert not fleet.wait_confirmed_sync(4, 0.2)  # b has not applied 4
    _beat(db, "b", 4)
    assert fleet.wait_confirmed_sync(4, 1.0)
    assert not fleet.wait_confirmed_sync(6, 0.2)
    _age(db, "a", 60)  # a's agent stopped beating: not live, not waited for
    _beat(db, "b", 6)
    assert fleet.wait_confirmed_sync(6, 1.0)
    assert fleet.live_cursors() == {"b": 6}
    nodes.mark_stopped(db, "b")
    assert fleet.live_cursors() == {}


def test_the_lag_monitor_alerts_once_per_episode(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    _beat(db, "a", 0)
    with db.engine.begin() as conn:
        conn.execute(tables.change_log.insert(), [
            {"identity_key": "A" * 64, "value": None, "user_id": "u", "deprovision": True,
             "created": "2000-01-01T00:00:00.000000Z"},
        ])  # fmt: skip
        seq = conn.execute(sa.select(sa.func.max(tables.change_log.c.seq))).scalar_one()
    metrics = Metrics()
    monitor = FleetMonitor(db, metrics, live_seconds=5.0, alert_seconds=10.0)
    with caplog.at_level(logging.WARNING, logger="scimgate.fleet"):
        assert [r["node"] for r in monitor.check()] == ["a"]
        assert [r["node"] for r in monitor.check()] == ["a"]
    warnings = [r for r in caplog.records if r.getMessage() == "fleet: node lags on a deprovision"]
    assert len(warnings) == 1  # one per episode, not per check
    assert metrics.node_lag_alerts.labels("a")._value.get() == 1
    assert metrics.node_deprovision_lag.labels("a")._value.get() > 10
    status = node_status(db, 5.0)[0]
    assert status["lag"] == 1 and status["oldest_unapplied_deprovision"]["seq"] == seq
    _beat(db, "a", int(seq))
    assert monitor.check() == []
    assert metrics.node_deprovision_lag.labels("a")._value.get() == 0
    _beat(db, "a", 0)  # a new episode (a node restored from an old snapshot, say)
    assert [r["node"] for r in monitor.check()] == ["a"]
    assert metrics.node_lag_alerts.labels("a")._value.get() == 2
