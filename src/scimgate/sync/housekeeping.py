"""Housekeeping: one thread, on a timer, for what no change-log event drives: bringing the
map files up to the store (debounced, incremental), alerting on deprovisions not confirmed
everywhere in time, and the lag gauges."""

from __future__ import annotations

import logging
import threading

import scimgate.sync.state as state
import scimgate.sync.status as status
from scimgate.config import Settings
from scimgate.metrics import Metrics
from scimgate.store.db import Database
from scimgate.store.outbox import head_seq
from scimgate.sync.mapfiles import MapFiles
from scimgate.sync.threads import engine_thread
from scimgate.sync.waiters import Waiters

log = logging.getLogger("scimgate.sync")

TICK = 0.5  # seconds between passes (the map files' debounce is a multiple of it)
ALERT_LINES = 10  # overdue deprovisions logged one per line per pass; the rest in one summary


class Housekeeper:
    """The housekeeping thread. Its alert memory (``_told_upto``) is its own; everything else
    it reads through the owners' methods."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        metrics: Metrics,
        waiters: Waiters,
        map_files: MapFiles,
        stopping: threading.Event,
    ) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics
        self.waiters = waiters
        self.map_files = map_files
        self.stopping = stopping
        self._told_upto = -1  # deprovisions up to this seq were logged as overdue
        self._previous_head = -1  # the change-log head at the previous pass
        self.thread = engine_thread(self._run, "sync-housekeeping")

    def _run(self) -> None:
        while not self.stopping.wait(TICK):
            try:
                self.once()
            except Exception:
                log.exception("sync: housekeeping error")

    def once(self) -> None:
        with self.db.read() as conn:
            head = head_seq(conn)
        self.waiters.saw_head(head)
        self._write_map_files(head)
        self._check_deprovisions()
        for target in self.waiters.cursors():
            self.metrics.target_lag.labels(target).set(self.waiters.lag(target))

    def _write_map_files(self, head: int) -> None:
        writers = self.map_files.writers()
        due = [w for w in writers if w.due(head)]
        # Incremental: only the shards whose keys changed since each writer's last write (a
        # full snapshot re-read and rewrite per tick is O(all identities) of Python work
        # holding the GIL against the followers; profiled as the 1M-identity stall).
        for w in due:
            keys = (
                state.keys_changed_between(self.db, w.written_seq, head)
                if w.written_seq >= 0
                else None
            )
            if keys is None:
                w.write(state.read_snapshot(self.db))
            else:
                w.write_shards_of(self.db, keys)
                w.mark_written(head)
        for w in writers:
            if w in due:
                continue
            # changes that were there a tick ago and that no follower handed in yet (its
            # target is down): from the store, so a restarted HAProxy loads them
            if not w.catch_up_overlay(self.db, self._previous_head) and w.overlay_due():
                w.write_overlay()  # small: the changes the shard files lack
        self._previous_head = head

    def _check_deprovisions(self) -> None:
        """A deprovision not applied everywhere within the threshold: ERROR once per
        change, and the gauge counts them."""
        alert = self.settings.deprovision_alert_seconds
        cursors = self.waiters.cursors()
        low = min(cursors.values(), default=self.waiters.head)
        with self.db.read() as conn:
            rows = status.overdue_deprovisions(conn, low, alert)  # at most 1000: the gauge
            # the ones not told yet (past the first 1000 too, which stay overdue meanwhile)
            fresh = (
                status.overdue_deprovisions(conn, max(low, self._told_upto), alert) if rows else []
            )
        self.metrics.unconfirmed.set(len(rows))
        if fresh:
            self._told_upto = fresh[-1][0]
        # One line each for the first few; a policy change that deprovisions a million
        # identities while a target is down gets one summary line, not a million.
        for seq, created in fresh[:ALERT_LINES]:
            log.error(
                "sync: deprovision not confirmed in time",
                extra={
                    "seq": seq,
                    "logged": created,
                    "targets": [t for t, c in cursors.items() if c < seq],
                    "threshold_seconds": alert,
                    "age_seconds": round(state.age_seconds(created), 3),
                },
            )
        if len(fresh) > ALERT_LINES:
            rest = fresh[ALERT_LINES:]
            log.error(
                "sync: more deprovisions not confirmed in time",
                extra={
                    "count": len(rest),
                    "first_seq": rest[0][0],
                    "last_seq": rest[-1][0],
                    "targets": [t for t, c in cursors.items() if c < rest[-1][0]],
                    "threshold_seconds": alert,
                    "oldest_age_seconds": round(state.age_seconds(rest[0][1]), 3),
                },
            )
