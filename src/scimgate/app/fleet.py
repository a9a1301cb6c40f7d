"""The fleet as the API replicas see it: the node table kept by the agents.

Does: read-your-writes across the fleet (a write's answer waits, bounded, until every *live*
node confirmed it: ``FleetPropagation``, the ``app.propagation.Propagation`` of the API
role), each node's lag for `scimgate status`, and the alert when a node lags on a deprovision
past ``deprovision_alert_seconds`` (a log line and metrics: ``FleetMonitor``).
Does not: apply anything to HAProxy (``sync`` inside ``scimgate agent``), or decide what a
node is beyond its row (liveness is its heartbeat's age on the database's clock).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from scimgate.metrics import Metrics
from scimgate.store import nodes
from scimgate.store.db import Database
from scimgate.store.outbox import head_seq

log = logging.getLogger("scimgate.fleet")


def _age_seconds(iso: str) -> float:
    stamp = datetime.fromisoformat(iso.rstrip("Z")).replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - stamp).total_seconds())


class FleetPropagation:
    """Read-your-writes for the API role: every live node's confirmed cursor, from the node
    table. One read of the table serves every request waiting at that moment (single
    flight), at most every ``poll_interval`` seconds. A node that is not live (its agent
    stopped beating ``live_seconds`` ago) is not waited for: `status` shows it, the monitor
    alerts on it, and in strict mode its HAProxy fails closed by itself."""

    def __init__(self, db: Database, *, live_seconds: float, poll_interval: float) -> None:
        self.db = db
        self.live_seconds = live_seconds
        self.poll_interval = poll_interval
        # _cond (and its lock): _cursors, _read_at, _reading: the last read of the node
        # table and whether a thread is reading it now. Never held across the read.
        self._cond = threading.Condition()
        self._cursors: dict[str, int] = {}
        self._read_at = float("-inf")
        self._reading = False

    def live_cursors(self) -> dict[str, int]:
        """Each live node's confirmed cursor, at most ``poll_interval`` old."""
        with self._cond:
            if time.monotonic() - self._read_at < self.poll_interval:
                return dict(self._cursors)
            if self._reading:
                self._cond.wait_for(lambda: not self._reading, timeout=5.0)
                return dict(self._cursors)
            self._reading = True
        cursors: dict[str, int] | None = None
        try:
            with self.db.read() as conn:
                rows = nodes.list_nodes(conn)
            cursors = {r.name: r.cursor for r in rows if r.heartbeat_age <= self.live_seconds}
        finally:
            with self._cond:
                if cursors is not None:
                    self._cursors, self._read_at = cursors, time.monotonic()
                self._reading = False
                self._cond.notify_all()
        return dict(cursors)

    async def wait_confirmed(self, seq: int, timeout: float) -> bool:
        """True once every live node has applied every change up to ``seq``."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            cursors = await loop.run_in_executor(None, self.live_cursors)
            if all(c >= seq for c in cursors.values()):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(self.poll_interval, remaining))

    def wait_confirmed_sync(self, seq: int, timeout: float) -> bool:
        """The same for threads (CLI, tests)."""
        deadline = time.monotonic() + timeout
        while not all(c >= seq for c in self.live_cursors().values()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_interval)
        return True

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """An API replica is ready when its database is (``Readiness``): a lagging node is
        the monitor's and the node's business, not a reason to stop taking writes."""
        try:
            cursors = self.live_cursors()
        except Exception as exc:  # the database check reports the outage itself
            return True, {"live_nodes": f"unknown: {type(exc).__name__}"}
        return True, {"live_nodes": len(cursors)}


def node_status(db: Database, live_seconds: float) -> list[dict[str, Any]]:
    """Every node of the fleet with its lag (changes and, for deprovisions, seconds)."""
    with db.read() as conn:
        head = head_seq(conn)
        rows = nodes.list_nodes(conn)
        pending = {r.name: nodes.oldest_unapplied_deprovision(conn, r.cursor) for r in rows}
    out = []
    for r in rows:
        oldest = pending[r.name]
        out.append(
            {
                "node": r.name,
                "live": r.heartbeat_age <= live_seconds,
                "heartbeat_age_seconds": round(r.heartbeat_age, 3),
                "cursor": r.cursor,
                "lag": max(0, head - r.cursor),
                "oldest_unapplied_deprovision": None
                if oldest is None
                else {"seq": oldest[0], "age_seconds": round(_age_seconds(oldest[1]), 3)},
                "reachable": r.reachable,
                "fail_closed": r.fail_closed,
                "worker_pid": r.worker_pid,
                "haproxy_version": r.haproxy_version,
                "started": r.started,
                "heartbeat": r.heartbeat,
                "last_error": r.last_error,
            }
        )
    return out


class FleetMonitor:
    """Looks at every node (live or not) and alerts when one has not applied a deprovision
    older than ``alert_seconds``: one warning when it starts and one when it ends (not one
    per check), a counter per alert, and gauges of every node's lag on each check."""

    def __init__(
        self, db: Database, metrics: Metrics, *, live_seconds: float, alert_seconds: float
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.live_seconds = live_seconds
        self.alert_seconds = alert_seconds
        self._alerting: set[str] = set()  # nodes in alert; the monitor's thread only

    def check(self) -> list[dict[str, Any]]:
        """One look; returns the nodes in alert now."""
        alerts = []
        for row in node_status(self.db, self.live_seconds):
            name = row["node"]
            oldest = row["oldest_unapplied_deprovision"]
            age = oldest["age_seconds"] if oldest else 0.0
            self.metrics.node_live.labels(name).set(1 if row["live"] else 0)
            self.metrics.node_lag.labels(name).set(row["lag"])
            self.metrics.node_deprovision_lag.labels(name).set(age)
            if oldest is not None and age > self.alert_seconds:
                alerts.append(row)
                if name not in self._alerting:
                    self._alerting.add(name)
                    self.metrics.node_lag_alerts.labels(name).inc()
                    log.warning(
                        "fleet: node lags on a deprovision",
                        extra={"node": name, "seq": oldest["seq"], "age_seconds": age,
                               "live": row["live"], "fail_closed": row["fail_closed"]},
                    )  # fmt: skip
            elif name in self._alerting:
                self._alerting.discard(name)
                log.info("fleet: node caught up", extra={"node": name, "cursor": row["cursor"]})
        return alerts
