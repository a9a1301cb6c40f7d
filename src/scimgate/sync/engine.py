"""The sync engine's lifecycle: it builds the rooms, starts and stops their threads, and is
the one door the rest of the product uses (notify, read-your-writes, resync, readiness).

Threads, each owning its state (docs/architecture.md, "The sync engine's rooms"):

- one follower per target (``follower``): the change log into HAProxy, confirmations;
- one drainer per target (``drainer``): the shards up to the target's overlay;
- the recorder (``recorder``): durable records of confirmed batches, in order;
- housekeeping (``housekeeping``): map files, deprovision alerts, lag gauges.

Followers see this class only through ``follower.EngineView``; drainers not at all.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import scimgate.sync.state as state
import scimgate.sync.status as status
from scimgate.config import Settings
from scimgate.haproxy.process import HAProxyNotFound, binary_version
from scimgate.metrics import Metrics
from scimgate.store.db import Database, now_iso
from scimgate.store.outbox import MapChange, TimedChange, head_seq
from scimgate.sync.follower import TargetFollower
from scimgate.sync.housekeeping import Housekeeper
from scimgate.sync.layout import MapLayout, choose_shards
from scimgate.sync.mapfiles import MapFiles, MapFileWriter
from scimgate.sync.reasons import ResyncReason
from scimgate.sync.recorder import Recorder
from scimgate.sync.waiters import Waiters

JOIN_TIMEOUT = 10.0
SWITCH_INTERVAL = 0.001  # seconds (sys.setswitchinterval), see SyncEngine.start


class SyncEngine:
    """Keeps every configured HAProxy target equal to the desired state in the store."""

    def __init__(self, settings: Settings, db: Database, metrics: Metrics) -> None:
        self._settings = settings
        self._db = db
        self._metrics = metrics
        self._stopping = threading.Event()
        self.waiters = Waiters(t.name for t in settings.targets)
        self.recorder = Recorder(functools.partial(state.record_applied_batches, db))
        self.map_files = MapFiles(db)
        self.followers = [TargetFollower(self, t) for t in settings.targets]
        self.housekeeper = Housekeeper(
            settings, db, metrics, self.waiters, self.map_files, self._stopping
        )
        self._started = False

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, metrics: Metrics) -> SyncEngine:
        names = [t.name for t in settings.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique: {names}")
        return cls(settings, db, metrics)

    # ---- what followers see (follower.EngineView)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def db(self) -> Database:
        return self._db

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    def map_writer(self, map_dir: str, layout: MapLayout) -> MapFileWriter:
        return self.map_files.writer_for(map_dir, layout)

    def record(self, job: Callable[[], object] | state.AppliedBatch) -> None:
        self.recorder.record(job)

    def saw_head(self, seq: int) -> None:
        self.waiters.saw_head(seq)

    def writes_in_progress(self) -> int:
        return self._db.writes_in_progress

    def advanced(self, target: str, cursor: int) -> None:
        self.waiters.advanced(target, cursor)
        self._metrics.target_lag.labels(target).set(self.waiters.lag(target))

    # ---- lifecycle

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        # A follower woken by a SCIM write waits for the GIL at each step (read the log,
        # send, read back); a CPU-bound thread (map-file patching, JSON) holds it for up to
        # the switch interval each time: 5 ms by default, several times per change. 1 ms
        # keeps a deprovision's path short at a small cost in thread switches.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        state.ensure_targets(self._db, [t.name for t in self._settings.targets])
        with self._db.read() as conn:
            self.waiters.saw_head(head_seq(conn))
            cursors = {f.name: state.stored_cursor(conn, f.name) for f in self.followers}
        for f in self.followers:
            self.waiters.advanced(f.name, cursors[f.name])
            self._metrics.target_up.labels(f.name).set(0)
        self._prepare_map_files()
        self.recorder.start()
        for f in self.followers:
            f.start(cursors[f.name])
        self.housekeeper.thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for f in self.followers:
            f.nudge()
            f.drainer.wake.set()
            f.cutter.wake.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        threads = [t for f in self.followers for t in (f.thread, f.drainer.thread, f.cutter.thread)]
        for thread in [*threads, self.housekeeper.thread]:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        # After the followers: every confirmed batch is recorded first.
        self.recorder.stop(max(0.0, deadline - time.monotonic()))
        self.waiters.close()

    def _prepare_map_files(self) -> None:
        """Writers for map dirs whose layout is known before any target answers: the
        configured shard count, or the local haproxy binary's version."""
        dirs = {t.map_dir for t in self._settings.targets if t.map_dir}
        if not dirs:
            return
        shards = self._settings.map_shards
        if not shards:
            try:
                shards = choose_shards(binary_version())
            except (HAProxyNotFound, RuntimeError, OSError):
                return  # decided when a target answers
        self.map_files.prepare(dirs, shards)

    # ---- the request path

    def notify(self, changes: Sequence[MapChange]) -> None:
        """Called after a committed SCIM write: hand its changes to the followers and wake
        them (cheap, never blocks). The changes' time is now: the commit."""
        if changes:
            self.waiters.saw_head(max(c.seq for c in changes))
            created = now_iso()
            timed = [TimedChange(c, created) for c in changes]
            for f in self.followers:
                f.offer(timed)
        else:
            for f in self.followers:
                f.nudge()

    async def wait_confirmed(self, seq: int, timeout: float) -> bool:
        """True once every target has applied every change up to ``seq``; False on timeout
        (the event loop is never blocked: the followers resolve a future thread-safely)."""
        return await self.waiters.wait(seq, timeout)

    def wait_confirmed_sync(self, seq: int, timeout: float) -> bool:
        """The same for threads (CLI, tests)."""
        return self.waiters.wait_sync(seq, timeout)

    def resync(self, target: str | None = None, reason: ResyncReason = ResyncReason.MANUAL) -> None:
        """Ask for a full resync of one target (or all) at the next follower turn (a request
        made while one runs gets a resync of its own after it)."""
        for f in self.followers:
            if target is None or f.name == target:
                f.resyncs.request(reason)
                f.nudge()

    # ---- readiness and status

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return status.live_ready(
            self.followers, self.waiters, self._settings.deprovision_alert_seconds
        )

    def status(self) -> list[dict[str, Any]]:
        return status.live_status(self._db, self._settings, self.followers)
