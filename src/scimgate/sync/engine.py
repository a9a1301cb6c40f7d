"""The sync engine: one follower thread per HAProxy target, plus one housekeeping thread
(map files, deprovision alerts, lag gauges).

A follower owns one persistent Runtime API connection. It applies the change log from its
cursor in coalesced batches, reads each batch back, and records it; whenever it cannot be
sure what HAProxy holds (start, reconnect, restart, reload, a failed or mismatching write,
drift, someone else's map commit) it does a full atomic resync instead. The change log
makes updates fast; the resync makes them correct.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from scimgate.api.metrics import Metrics
from scimgate.config import Settings, TargetConfig
from scimgate.haproxy.process import HAProxyNotFound, binary_version
from scimgate.haproxy.runtime import (
    HAProxyRuntimeError,
    MasterProcs,
    RuntimeAddress,
    RuntimeClient,
    master_command,
    parse_show_proc,
    parse_version,
)
from scimgate.store.db import Database, now_iso
from scimgate.store.outbox import MapChange, head_seq
from scimgate.sync import state
from scimgate.sync.apply import (
    BatchResult,
    apply_batch,
    apply_overlay,
    apply_values,
    coalesce,
    overlay_value,
    read_back,
    read_back_overlay,
    replace_behind_overlay,
)
from scimgate.sync.layout import LayoutError, MapLayout, choose_shards, resolve_layout
from scimgate.sync.mapfiles import MapFileWriter
from scimgate.sync.reconcile import drift_check, full_resync

log = logging.getLogger("scimgate.sync")

TICK = 0.2  # follower wake-up without a notify (other processes' writes, timers)
PROBE_INTERVAL = 1.0  # restart/reload/external-commit detection
BATCH = 5000  # change-log rows per read
BACKLOG_RESYNC = 50_000  # further behind than this: one resync beats replaying the log
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
CLIENT_TIMEOUT = 10.0
JOIN_TIMEOUT = 10.0
#: Most keys the overlay map holds: a batch that would take it past this goes straight to
#: the shards (bulk changes, where one walk per key matters less than the batch's total).
OVERLAY_LIMIT = 10_000
SWITCH_INTERVAL = 0.001  # seconds (sys.setswitchinterval), see SyncEngine.start


class _ReadBackMismatch(Exception):
    pass


class TargetFollower:
    """Follows the change log into one HAProxy target (runs in its own thread)."""

    def __init__(self, engine: SyncEngine, target: TargetConfig) -> None:
        self.engine = engine
        self.target = target
        self.name = target.name
        self.thread = threading.Thread(target=self._run, name=f"sync-{target.name}", daemon=True)
        self.wake = threading.Event()
        self.client: RuntimeClient | None = None
        self.layout: MapLayout | None = None
        self.reachable = False
        self.cursor = 0
        self.entries: int | None = None
        self.last_error: str | None = None
        self.resync_reason: str | None = "startup"
        self.caught_up_at: float | None = None  # monotonic
        self.last_probe = 0.0
        self.last_drift_check = time.monotonic()
        self.worker_pid: int | None = None  # the worker our last resync went to
        self.master_reloads: int | None = None
        self.old_workers: list[int] = []
        self.map_versions: dict[str, int] = {}
        self.recent_latencies: collections.deque[float] = collections.deque(maxlen=10_000)
        # The overlay as we put it in HAProxy (key -> value or tombstone), and the keys
        # whose shard entry is not yet their desired value (key -> value, None = delete),
        # oldest first. Emptied by every resync (which clears the overlay).
        self.overlay: dict[str, str] = {}
        self.pending: dict[str, str | None] = {}
        # state_lock: overlay + pending, and the overlay's wire ops that change them (short).
        # shard_lock: the shards' wire ops: the drainer's steps, resyncs, bulk batches.
        self.state_lock = threading.Lock()
        self.shard_lock = threading.Lock()
        self.drainer = _Drainer(self)

    # ---- thread body

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        stop = self.engine.stopping
        while not stop.is_set():
            try:
                if self.client is None:
                    self._connect()
                if self.resync_reason is not None:
                    self._resync(self.resync_reason)
                self._follow()
                self._periodic()
                if self.pending:
                    self.drainer.wake.set()
                backoff = BACKOFF_MIN
            except (HAProxyRuntimeError, OSError, LayoutError) as exc:
                self._unreachable(exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except _ReadBackMismatch:
                continue  # resync_reason is set: resync right away
            except SQLAlchemyError as exc:
                log.warning("sync: store error", extra={"target": self.name, "error": str(exc)})
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except Exception:  # a bug must not silently end the follower
                log.exception("sync: follower error", extra={"target": self.name})
                self._mark_dirty("error")
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self.wake.wait(TICK)
            self.wake.clear()
        if self.client is not None:
            self.client.close()

    # ---- connection

    def _connect(self) -> None:
        client = RuntimeClient(
            self.target.runtime_api, CLIENT_TIMEOUT, master=self.target.master_api
        )
        try:
            info = client.show_info()
            version = parse_version(info.get("Version", ""))
            layout, warning = resolve_layout(
                [m.path for m in client.list_maps()],
                version=version,
                configured_shards=self.engine.settings.map_shards,
                map_dir=self.target.map_dir,
            )
        except BaseException:
            client.close()
            raise
        if warning:
            log.warning("sync: " + warning, extra={"target": self.name})
        self.client, self.layout = client, layout
        self.master_reloads = None
        if self.target.master_api:
            with contextlib.suppress(HAProxyRuntimeError, OSError):
                self.master_reloads = self._master_procs_quiet().reloads
        if self.target.map_dir:
            self.engine._writer_for(self.target.map_dir, layout)
        if self.resync_reason is None:
            self.resync_reason = "reconnect"

    def _unreachable(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        was = self.reachable
        self.reachable = False
        self.engine.metrics.target_up.labels(self.name).set(0)
        if self.client is not None:
            self.client.close()
            self.client = None
        # Whatever HAProxy holds now is unknown: the next success starts with a resync.
        if self.resync_reason is None:
            self.resync_reason = "reconnect"
        if was or error != self.last_error:
            log.warning(
                "sync: target unreachable",
                extra={"target": self.name, "runtime_api": self.target.runtime_api, "error": error},
            )
        if error != self.last_error:
            self.last_error = error
            with contextlib.suppress(SQLAlchemyError):
                state.record_error(self.engine.db, self.name, error)

    def _mark_dirty(self, reason: str) -> None:
        if self.resync_reason is None:
            self.resync_reason = reason

    # ---- resync and follow

    def _resync(self, reason: str) -> None:
        assert self.client is not None and self.layout is not None
        writer = self.engine._writers.get(self.target.map_dir or "")
        with self.shard_lock:  # no drain step in between: it would write older values
            result = full_resync(
                self.engine.db, self.client, self.layout, self.name, reason,
                writer=writer, metrics=self.engine.metrics,
            )  # fmt: skip
            with self.state_lock:
                self.overlay.clear()  # the resync cleared it, after the shards took the snapshot
                self.pending.clear()
        self.resync_reason = None
        self.worker_pid = self.client.worker_pid
        self.entries = result.entries
        self._remember_versions()
        self.last_drift_check = time.monotonic()
        self._became_reachable()
        self._advance(result.seq)

    def _became_reachable(self) -> None:
        if not self.reachable:
            self.reachable = True
            self.engine.metrics.target_up.labels(self.name).set(1)
            if self.last_error is not None:
                log.info("sync: target reachable again", extra={"target": self.name})
            self.last_error = None

    def _follow(self) -> None:
        assert self.client is not None and self.layout is not None
        while not self.engine.stopping.is_set():
            batch = state.read_changes(self.engine.db, self.cursor, BATCH)
            head = None
            if len(batch) == BATCH:
                with self.engine.db.read() as conn:
                    head = head_seq(conn)
            if not batch:
                self.caught_up_at = time.monotonic()
                self.engine._update_lag(self)
                return
            self.engine._saw_head(batch[-1].change.seq)
            if head is not None and head - self.cursor > BACKLOG_RESYNC:
                self._resync("backlog")
                continue
            self._apply(batch)

    def _apply(self, batch: Sequence[state.TimedChange]) -> None:
        assert self.client is not None and self.layout is not None
        coalesced = coalesce(tc.change for tc in batch)
        overlay = self.layout.overlay
        fast = overlay is not None and len(self.overlay) + len(coalesced) <= OVERLAY_LIMIT
        try:
            if fast:
                assert overlay is not None
                with self.state_lock:
                    result = self._apply_to_overlay(overlay, coalesced)
            else:
                with self.shard_lock:
                    result = apply_batch(self.client, self.layout, coalesced)
                    if overlay is not None:
                        with self.state_lock:
                            self._retire_from_overlay(overlay, coalesced)
            expected: dict[str, str | None] = {
                k: c.value for k, c in coalesced.items() if k not in result.rejected
            }
            if fast:
                assert overlay is not None
                counts = read_back_overlay(self.client, overlay, expected)
            else:
                counts = read_back(self.client, self.layout, expected)
        except HAProxyRuntimeError as exc:
            # Fail closed: a partly applied batch is unknown state; never blindly resend.
            self._mark_dirty("apply_error")
            raise exc
        deprovisions = any(tc.change.deprovision for tc in batch)
        if self.target.map_dir and deprovisions and overlay is not None:
            # Files before confirmation: the overlay file (every change the shard files
            # lack, at its current value) is tiny, so this is off the O(shard) path.
            self.engine._writer_for(self.target.map_dir, self.layout).write_overlay()
        elif self.target.map_dir and deprovisions:
            # Files before confirmation: the live worker already denies (applied above, the
            # fast path); a reload racing this batch must still load files that lack the
            # revoked access, and the worker check below runs after this write, so a reload
            # in between is caught and resynced before anything is confirmed. Grants may lag
            # in files (debounced): over-denial until the post-reload resync is safe,
            # over-grant is not.
            self.engine._writer_for(self.target.map_dir, self.layout).write_shards_of(
                self.engine.db, [tc.change.identity_key for tc in batch if tc.change.deprovision]
            )
        if self.client.worker_pid != self.worker_pid:
            # The client reconnected transparently to another worker (restart): this
            # batch went to a process that loaded map files, not our runtime state.
            self._mark_dirty("restart")
            raise _ReadBackMismatch
        if self._current_worker_pid() != self.worker_pid:
            # A reload since our last probe: our connection still reaches the OLD worker
            # (it stays alive for it), so this batch never reached the worker that serves
            # new requests, which loaded map files that may lack it. Never confirm it: a
            # resync on the new worker confirms it instead.
            self._mark_dirty("reload")
            self.client.reconnect()
            raise _ReadBackMismatch
        if counts.total:
            state.record_drift(
                self.engine.db, self.name, source="readback", missing=counts.missing,
                extra=counts.extra, wrong=counts.wrong, seq=batch[-1].change.seq,
            )  # fmt: skip
            self.engine.metrics.drift_repairs.labels(self.name).inc()
            log.warning(
                "sync: read-back mismatch, resyncing",
                extra={
                    "target": self.name,
                    "missing": counts.missing,
                    "extra": counts.extra,
                    "wrong": counts.wrong,
                },
            )
            self._mark_dirty("readback")
            raise _ReadBackMismatch
        applied = now_iso()
        if self.entries is not None:
            self.entries += result.added - result.removed
        # Confirmed: HAProxy holds it, read back, files safe, same worker. Waiters (read-your-
        # writes) are released now; the durable record (a write transaction with an fsync,
        # which also waits for SCIM writes' lock) is written by the engine's recorder thread,
        # in order, so that the follower is back on the change log at once. If a record is
        # lost (a crash in between), the restart resyncs and records the resync instead; the
        # change itself is in HAProxy either way.
        self._became_reachable()
        self._advance(batch[-1].change.seq)
        self.engine._record(
            state.record_applied,
            self.engine.db,
            self.name,
            first_seq=batch[0].change.seq,
            last_seq=batch[-1].change.seq,
            set_keys=result.set_keys,
            deleted_keys=result.deleted_keys,
            applied=applied,
            entries=self.entries,
        )
        applied_at = state.parse_ts(applied)
        histogram = self.engine.metrics.propagation.labels(self.name)
        for tc in batch:
            seconds = max(0.0, (applied_at - state.parse_ts(tc.created)).total_seconds())
            histogram.observe(seconds)
            self.recent_latencies.append(seconds)
        if result.deleted_keys and self.old_workers:
            self._revoke_on_old_workers(result.deleted_keys)

    def _apply_to_overlay(self, overlay: str, coalesced: dict[str, MapChange]) -> BatchResult:
        """The fast path: the batch goes into the overlay (each key's final value, or the
        tombstone); the shards follow (:class:`_Drainer`). Caller holds ``state_lock``."""
        assert self.client is not None
        values = {k: c.value for k, c in coalesced.items()}
        rejected = apply_overlay(self.client, overlay, values, self.overlay.keys())
        sent = {k: v for k, v in values.items() if k not in set(rejected)}
        for key, value in sent.items():
            self.overlay[key] = overlay_value(value)
            self.pending.pop(key, None)  # re-queued last: it is the newest change now
            self.pending[key] = value
        return BatchResult(
            set_keys=[k for k, v in sent.items() if v is not None],
            deleted_keys=[k for k, v in sent.items() if v is None],
            added=0,  # the entry count changes when the shards do (the drainer)
            removed=0,
            rejected=rejected,
        )

    def _retire_from_overlay(self, overlay: str, coalesced: dict[str, MapChange]) -> None:
        """After a batch went straight to the shards: its keys leave the overlay (the shard
        now has their newest value; until this ``del`` the overlay shows an older one).
        Caller holds both locks."""
        assert self.client is not None
        held = [k for k in coalesced if k in self.overlay]
        for key in coalesced:
            self.pending.pop(key, None)
        if held:
            self.client.delete_many(overlay, held)
            for key in held:
                del self.overlay[key]

    def _advance(self, seq: int) -> None:
        self.cursor = seq
        self.engine._cursor_advanced()
        self.engine._update_lag(self)

    # ---- restarts, reloads, external commits, drift

    def _periodic(self) -> None:
        now = time.monotonic()
        if now - self.last_probe >= PROBE_INTERVAL:
            self.last_probe = now
            self._probe()
        interval = self.engine.settings.drift_check_interval
        if interval > 0 and self.resync_reason is None and now - self.last_drift_check >= interval:
            self._drift_check()

    def _master_procs_quiet(self) -> MasterProcs:
        assert self.target.master_api is not None
        return parse_show_proc(
            master_command(RuntimeAddress.parse(self.target.master_api), "show proc", 2.0)
        )

    def _current_worker_pid(self) -> int:
        """The worker a NEW connection reaches (ours may still be an old one's). One round
        trip (~0.35 ms on a unix socket): the connection handshake reads the worker's pid."""
        with RuntimeClient(self.target.runtime_api, 2.0, cli_timeout=None) as probe:
            probe.reconnect()
            assert probe.worker_pid is not None
            return probe.worker_pid

    def _probe(self) -> None:
        assert self.client is not None and self.layout is not None
        # A fresh connection reaches the current worker; ours may still be the old one.
        pid = self._current_worker_pid()
        reason = None
        if self.target.master_api:
            try:
                procs = self._master_procs_quiet()
            except HAProxyRuntimeError:
                procs = None  # the master refuses connections while it re-executes
            if procs is not None:
                if self.master_reloads is not None and procs.reloads > self.master_reloads:
                    reason = "reload"
                self.master_reloads = procs.reloads
                self.old_workers = [w.pid for w in procs.old_workers]
        if pid != self.worker_pid or self.client.worker_pid != self.worker_pid:
            reason = reason or "restart"
        if reason is not None:
            log.warning(
                "sync: HAProxy worker changed, resyncing",
                extra={
                    "target": self.name,
                    "reason": reason,
                    "old_pid": self.worker_pid,
                    "new_pid": pid,
                },
            )
            self._mark_dirty(reason)
            self.client.reconnect()
            return
        versions = {m.path: m.curr_ver for m in self.client.list_maps()}
        if any(versions.get(p) != v for p, v in self.map_versions.items()):
            # Someone else committed a map version (e.g. `scimgate resync` from another
            # process): what it holds is no longer what we applied.
            self._mark_dirty("external_commit")

    def _remember_versions(self) -> None:
        assert self.client is not None and self.layout is not None
        paths = set(self.layout.paths)
        self.map_versions = {m.path: m.curr_ver for m in self.client.list_maps() if m.path in paths}

    def _drift_check(self) -> None:
        assert self.client is not None and self.layout is not None
        self.last_drift_check = time.monotonic()
        with self.shard_lock:  # shards and overlay read as one view (no drain step between)
            counts = drift_check(self.engine.db, self.client, self.layout, self.name, self.cursor)
        if counts is None or not counts.total:
            return
        self.engine.metrics.drift_repairs.labels(self.name).inc()
        log.warning(
            "sync: drift found, repairing",
            extra={
                "target": self.name,
                "missing": counts.missing,
                "extra": counts.extra,
                "wrong": counts.wrong,
            },
        )
        self._mark_dirty("drift")

    def _revoke_on_old_workers(self, keys: Sequence[str]) -> None:
        """Old workers (after a reload) serve their open connections with the map they had:
        send them the deletes too, through the master CLI (best effort; hard-stop-after
        bounds their life anyway)."""
        assert self.client is not None and self.layout is not None and self.target.master_api
        master = RuntimeAddress.parse(self.target.master_api)
        v = self.client.validator
        for pid in self.old_workers:
            for key in keys:
                path = v.map_path(self.layout.path_of(key))
                try:
                    master_command(master, f"@!{int(pid)} del map {path} {v.key(key)}", 2.0)
                except HAProxyRuntimeError as exc:
                    log.warning(
                        "sync: could not revoke on an old worker",
                        extra={"target": self.name, "pid": pid, "error": str(exc)},
                    )
                    break


_ABSENT = object()


class _Drainer:
    """Brings one target's shards up to its overlay, one key per step, on its own thread and
    its own Runtime API connection: a step walks one shard (``set``/``del map`` are O(shard)
    on 2.6: ~3-15 ms at 62k entries), and the follower's next change must not queue behind
    it. A key leaves the overlay once its shard holds the same value; in a request's order
    (overlay first) that hand-over is never visible. A failed step leaves the key pending
    and in the overlay, which still decides for it (steps are idempotent)."""

    def __init__(self, follower: TargetFollower) -> None:
        self.f = follower
        self.wake = threading.Event()
        self.client: RuntimeClient | None = None
        self.steps = 0
        self.thread = threading.Thread(
            target=self._run, name=f"sync-drain-{follower.name}", daemon=True
        )

    def _run(self) -> None:
        stop = self.f.engine.stopping
        while not stop.is_set():
            self.wake.wait(TICK)
            self.wake.clear()
            try:
                while not stop.is_set() and self._step():
                    pass
            except (HAProxyRuntimeError, OSError) as exc:
                log.info(
                    "sync: drain step failed, retrying",
                    extra={"target": self.f.name, "error": f"{type(exc).__name__}: {exc}"},
                )
                self._close()
                stop.wait(BACKOFF_MIN)
            except Exception:  # a bug must not silently end the drainer
                log.exception("sync: drainer error", extra={"target": self.f.name})
                self._close()
                stop.wait(BACKOFF_MAX)
            self.f.engine.metrics.overlay_entries.labels(self.f.name).set(len(self.f.overlay))
        self._close()

    def _close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _connected(self, pid: int) -> RuntimeClient | None:
        """A connection to the worker the follower resynced (``pid``), or None for now."""
        if self.client is None:
            self.client = RuntimeClient(self.f.target.runtime_api, CLIENT_TIMEOUT)
        if self.client.worker_pid != pid:
            self.client.reconnect()
            if self.client.worker_pid != pid:
                return None  # a restart or reload the follower has not resynced yet
        return self.client

    def _step(self) -> bool:
        """Drain one key; False when there is nothing (drainable) to do."""
        f = self.f
        with f.shard_lock:
            with f.state_lock:
                layout, pid = f.layout, f.worker_pid
                if not f.pending or layout is None or layout.overlay is None or pid is None:
                    return False
                key = next(iter(f.pending))
                value = f.pending[key]
                covered = key in f.overlay  # and stays so: only this step removes it
            client = self._connected(pid)
            if client is None:
                return False
            if covered:
                result = replace_behind_overlay(client, layout, key, value)
            else:
                result = apply_values(client, layout, {key: value})
            with f.state_lock:
                if f.overlay.get(key) == overlay_value(value):
                    client.delete_many(layout.overlay, [key])
                    del f.overlay[key]
                if f.pending.get(key, _ABSENT) == value:
                    del f.pending[key]  # (a newer value stays queued)
                if f.entries is not None:
                    f.entries += result.added - result.removed
        self.steps += 1
        return True


class SyncEngine:
    """Keeps every configured HAProxy target equal to the desired state in the store."""

    def __init__(self, settings: Settings, db: Database, metrics: Metrics) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics
        self.stopping = threading.Event()
        self.followers = [TargetFollower(self, t) for t in settings.targets]
        self._cond = threading.Condition()
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[bool]]] = []
        self._head = 0
        self._writers: dict[str, MapFileWriter] = {}
        self._writers_lock = threading.Lock()
        self._alerted: set[int] = set()
        self._housekeeper = threading.Thread(
            target=self._housekeep, name="sync-housekeeping", daemon=True
        )
        self._records: queue.Queue[
            tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]] | None
        ]
        self._records = queue.Queue()
        self._recorder = threading.Thread(
            target=self._record_loop, name="sync-recorder", daemon=True
        )
        self._started = False

    @classmethod
    def from_settings(cls, settings: Settings, db: Database, metrics: Metrics) -> SyncEngine:
        names = [t.name for t in settings.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique: {names}")
        return cls(settings, db, metrics)

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
        state.ensure_targets(self.db, [t.name for t in self.settings.targets])
        with self.db.read() as conn:
            self._head = head_seq(conn)
            for f in self.followers:
                f.cursor = state.stored_cursor(conn, f.name)
                self.metrics.target_up.labels(f.name).set(0)
        self._prepare_writers()
        for f in self.followers:
            f.thread.start()
            f.drainer.thread.start()
        self._housekeeper.start()
        self._recorder.start()

    def stop(self) -> None:
        self.stopping.set()
        for f in self.followers:
            f.wake.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for f in self.followers:
            f.drainer.wake.set()
        threads = [t for f in self.followers for t in (f.thread, f.drainer.thread)]
        for thread in [*threads, self._housekeeper]:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._records.put(None)  # after the followers: every confirmed batch is recorded first
        if self._recorder.is_alive():
            self._recorder.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            for _seq, loop, fut in self._waiters:
                loop.call_soon_threadsafe(_resolve, fut, False)
            self._waiters.clear()
            self._cond.notify_all()

    # ---- the request path

    def notify(self, changes: Sequence[MapChange]) -> None:
        """Called after a committed SCIM write: wake the followers (cheap, never blocks)."""
        if changes:
            self._saw_head(max(c.seq for c in changes))
        for f in self.followers:
            f.wake.set()

    async def wait_confirmed(self, seq: int, timeout: float) -> bool:
        """True once every target has applied every change up to ``seq``; False on timeout
        (the event loop is never blocked: the followers resolve a future thread-safely)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        entry = (seq, loop, fut)
        with self._cond:
            if self._min_cursor() >= seq:
                return True
            if self.stopping.is_set():
                return False
            self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return False
        finally:
            with self._cond:
                if entry in self._waiters:
                    self._waiters.remove(entry)

    def wait_confirmed_sync(self, seq: int, timeout: float) -> bool:
        """The same for threads (CLI, tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._min_cursor() >= seq, timeout)

    def resync(self, target: str | None = None, reason: str = "manual") -> None:
        """Ask for a full resync of one target (or all) at the next follower turn."""
        for f in self.followers:
            if target is None or f.name == target:
                f.resync_reason = reason
                f.wake.set()

    # ---- readiness and status

    def ready(self) -> tuple[bool, dict[str, Any]]:
        alert = self.settings.deprovision_alert_seconds
        now = time.monotonic()
        ok = True
        detail: dict[str, Any] = {}
        for f in self.followers:
            lag = max(0, self._head - f.cursor)
            synced = lag == 0 or (f.caught_up_at is not None and now - f.caught_up_at <= alert)
            target_ok = f.reachable and f.resync_reason is None and synced
            detail[f.name] = {
                "reachable": f.reachable,
                "lag": lag,
                "ok": target_ok,
                "error": f.last_error,
            }
            ok = ok and target_ok
        return ok, detail

    def status(self) -> list[dict[str, Any]]:
        rows = state.status_from_db(self.db, self.settings)
        by_name = {f.name: f for f in self.followers}
        alert = self.settings.deprovision_alert_seconds
        for row in rows:
            f = by_name.get(row["target"])
            if f is None:
                continue
            row["reachable"] = f.reachable
            row["shards"] = f.layout.shards if f.layout else None
            row["map_dir"] = f.layout.map_dir if f.layout else None
            row["pending_resync"] = f.resync_reason
            if f.entries is not None:
                row["entries"] = f.entries  # the stored count lags the shards' drain
            row["overlay_entries"] = len(f.overlay)
            row["pending_shard_updates"] = len(f.pending)
            row["healthy"] = state.healthy(row, alert) and f.resync_reason is None
        return rows

    # ---- follower callbacks

    def _min_cursor(self) -> int:
        return min((f.cursor for f in self.followers), default=self._head)

    def _saw_head(self, seq: int) -> None:
        if seq > self._head:
            self._head = seq

    def _cursor_advanced(self) -> None:
        with self._cond:
            low = self._min_cursor()
            done = [w for w in self._waiters if w[0] <= low]
            for w in done:
                self._waiters.remove(w)
                w[1].call_soon_threadsafe(_resolve, w[2], True)
            self._cond.notify_all()

    def _update_lag(self, f: TargetFollower) -> None:
        self.metrics.target_lag.labels(f.name).set(max(0, self._head - f.cursor))

    # ---- the recorder: durable records of applied batches, off the followers' path

    def _record(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        if self._recorder.is_alive():
            self._records.put((fn, args, kwargs))
        else:
            fn(*args, **kwargs)  # not started (or stopped): record in the caller's thread

    def _record_loop(self) -> None:
        while True:
            item = self._records.get()
            if item is None:
                return
            fn, args, kwargs = item
            for attempt in range(5):
                try:
                    fn(*args, **kwargs)
                    break
                except SQLAlchemyError as exc:
                    log.warning(
                        "sync: could not record an applied batch",
                        extra={"attempt": attempt + 1, "error": str(exc)},
                    )
                    time.sleep(min(BACKOFF_MAX, BACKOFF_MIN * 2**attempt))
                except Exception:
                    log.exception("sync: recorder error")
                    break

    # ---- map files

    def _writer_for(self, map_dir: str, layout: MapLayout) -> MapFileWriter:
        key = map_dir.rstrip("/") or "/"
        with self._writers_lock:
            writer = self._writers.get(key)
            if writer is None or writer.layout != layout:
                if writer is not None:
                    log.warning(
                        "sync: map_dir layout changed",
                        extra={"map_dir": key, "shards": layout.shards},
                    )
                writer = MapFileWriter(layout, self.db)
                self._writers[key] = writer
                self._writers[map_dir] = writer
            elif layout.overlay != writer.layout.overlay and layout.overlay is not None:
                writer.layout = layout  # the same files; the config also loads an overlay
            return writer

    def _prepare_writers(self) -> None:
        """Writers for map dirs whose layout is known before any target answers: the
        configured shard count, or the local haproxy binary's version."""
        dirs = {t.map_dir for t in self.settings.targets if t.map_dir}
        if not dirs:
            return
        shards = self.settings.map_shards
        if not shards:
            try:
                shards = choose_shards(binary_version())
            except (HAProxyNotFound, RuntimeError, OSError):
                return  # decided when a target answers
        for d in dirs:
            if d not in self._writers:
                self._writer_for(d, MapLayout(d.rstrip("/") or "/", shards))

    # ---- housekeeping: map files, deprovision alerts

    def _housekeep(self) -> None:
        while not self.stopping.wait(DEBOUNCE_TICK):
            try:
                self._housekeep_once()
            except Exception:
                log.exception("sync: housekeeping error")

    def _housekeep_once(self) -> None:
        with self.db.read() as conn:
            head = head_seq(conn)
        self._saw_head(head)
        with self._writers_lock:
            writers = list({id(w): w for w in self._writers.values()}.values())
        due = [w for w in writers if w.due(head)]
        if due:
            # Incremental: only the shards whose keys changed since each writer's last write
            # (a full snapshot re-read and rewrite per tick is O(all identities) of Python
            # work holding the GIL against the followers; profiled as the 1M-identity stall).
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
            if w not in due and w.overlay_due(head):
                w.write_overlay()  # small: the changes the shard files lack
        self._check_deprovisions()
        for f in self.followers:
            self._update_lag(f)

    def _check_deprovisions(self) -> None:
        """A deprovision not applied everywhere within the threshold: ERROR once per
        change, and the gauge counts them."""
        alert = self.settings.deprovision_alert_seconds
        low = self._min_cursor()
        self._alerted = {s for s in self._alerted if s > low}
        with self.db.read() as conn:
            rows = state.overdue_deprovisions(conn, low, alert)
        self.metrics.unconfirmed.set(len(rows))
        for seq, created in rows:
            if seq in self._alerted:
                continue
            self._alerted.add(seq)
            waiting = [f.name for f in self.followers if f.cursor < seq]
            log.error(
                "sync: deprovision not confirmed in time",
                extra={
                    "seq": seq,
                    "logged": created,
                    "targets": waiting,
                    "threshold_seconds": alert,
                    "age_seconds": round(state.age_seconds(created), 3),
                },
            )


DEBOUNCE_TICK = 0.5


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)
