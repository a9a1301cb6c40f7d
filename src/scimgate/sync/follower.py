"""The follower: one thread per HAProxy target, following the change log into it.

It owns the target's persistent Runtime API connection and the overlay map's wire commands.
It applies the change log from its cursor in coalesced batches (into the overlay map when
there is room, else straight into the shards), reads each batch back, makes the map files
safe for a reload, checks the batch reached the worker that serves new requests, and only
then confirms it (read-your-writes waiters are released; the durable record goes to the
recorder). Whenever it cannot be sure what HAProxy holds (start, reconnect, restart, reload,
a failed or mismatching write, drift, someone else's map commit) it does a full atomic
resync instead: the change log makes updates fast, the resync makes them correct.

The follower sees its engine only through :class:`EngineView`; its drainer only through the
:class:`~scimgate.sync.overlay.Overlay` they share.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

import scimgate.sync.state as state
from scimgate.config import Settings, TargetConfig
from scimgate.haproxy import HAProxyRuntimeError, RuntimeClient, parse_version
from scimgate.metrics import Metrics
from scimgate.store.db import Database, now_iso
from scimgate.store.outbox import MapChange, TimedChange, head_seq, read_changes
from scimgate.sync.apply import (
    ENTRY_VALIDATOR,
    BatchResult,
    apply_batch,
    apply_overlay,
    coalesce,
    read_back,
    read_back_overlay,
)
from scimgate.sync.drainer import Drainer
from scimgate.sync.layout import LayoutError, MapLayout, resolve_layout
from scimgate.sync.mapfiles import MapFileWriter
from scimgate.sync.overlay import Overlay
from scimgate.sync.reasons import ResyncReason, ResyncRequests
from scimgate.sync.reconcile import drift_check, full_resync
from scimgate.sync.watch import WorkerWatch

log = logging.getLogger("scimgate.sync")

TICK = 0.2  # follower wake-up without a notify (other processes' writes, timers)
BATCH = 5000  # change-log rows per read
BACKLOG_RESYNC = 50_000  # further behind than this: one resync beats replaying the log
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
CLIENT_TIMEOUT = 10.0
#: Drained keys deleted from the overlay map per turn (bounds the delay a change arriving
#: meanwhile can see: one pipelined exchange of ``del map`` on a small map).
RETIRE_BATCH = 256


class EngineView(Protocol):
    """What a follower may use of its engine, and nothing else."""

    @property
    def settings(self) -> Settings: ...

    @property
    def db(self) -> Database: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def stopping(self) -> threading.Event: ...

    def map_writer(self, map_dir: str, layout: MapLayout) -> MapFileWriter:
        """The writer of the map files in ``map_dir`` (shared by the targets reading them)."""
        ...

    def record(self, job: Callable[[], object]) -> None:
        """Write a durable record later, in order (the recorder)."""
        ...

    def saw_head(self, seq: int) -> None:
        """A change up to ``seq`` exists."""
        ...

    def advanced(self, target: str, cursor: int) -> None:
        """``target`` confirmed every change up to ``cursor``."""
        ...


class _Unconfirmed(Exception):
    """The batch must not be confirmed; a resync was asked for instead."""


class TargetFollower:
    """Follows the change log into one HAProxy target (runs in its own thread).

    Its ``_``-prefixed fields are written by its own thread only; other threads read what
    they need through the read-only properties (single references: always consistent)."""

    def __init__(self, engine: EngineView, target: TargetConfig) -> None:
        self.engine = engine
        self.target = target
        self.name = target.name
        self.wake = threading.Event()
        self.overlay = Overlay()
        self.resyncs = ResyncRequests(ResyncReason.STARTUP)
        self.drainer = Drainer(target, self.overlay, engine.stopping, engine.metrics, self.nudge)
        self.watch = WorkerWatch(target)
        self.thread = threading.Thread(target=self._run, name=f"sync-{self.name}", daemon=True)
        self._client: RuntimeClient | None = None
        self._layout: MapLayout | None = None
        self._writer: MapFileWriter | None = None
        self._cursor = 0
        self._reachable = False
        self._last_error: str | None = None
        self._caught_up_at: float | None = None  # monotonic
        self._last_drift_check = time.monotonic()

    # ---- lifecycle (the engine's thread)

    def start(self, cursor: int) -> None:
        self._cursor = cursor
        self.thread.start()
        self.drainer.thread.start()

    def nudge(self) -> None:
        """Look at the change log now (and on stop: notice it)."""
        self.wake.set()

    # ---- what other threads read

    @property
    def cursor(self) -> int:
        return self._cursor

    @property
    def reachable(self) -> bool:
        return self._reachable

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def caught_up_at(self) -> float | None:
        return self._caught_up_at

    @property
    def layout(self) -> MapLayout | None:
        return self._layout

    # ---- thread body

    def _run(self) -> None:
        backoff = BACKOFF_MIN
        stop = self.engine.stopping
        while not stop.is_set():
            try:
                if self._client is None:
                    self._connect()
                if self.resyncs.pending() is not None:
                    self._resync()
                self._follow()
                self._retire()
                self._periodic()
                if self.overlay.to_drain:
                    self.drainer.wake.set()
                backoff = BACKOFF_MIN
            except (HAProxyRuntimeError, OSError, LayoutError) as exc:
                self._unreachable(exc)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except _Unconfirmed:
                continue  # a resync is asked for: do it right away
            except SQLAlchemyError as exc:
                log.warning("sync: store error", extra={"target": self.name, "error": str(exc)})
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except Exception:  # a bug must not silently end the follower
                log.exception("sync: follower error", extra={"target": self.name})
                self.resyncs.request(ResyncReason.ERROR)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self.wake.wait(TICK)
            self.wake.clear()  # after the wait, before the next read: no notify is lost
        if self._client is not None:
            self._client.close()

    # ---- connection

    def _connect(self) -> None:
        client = RuntimeClient(
            self.target.runtime_api,
            CLIENT_TIMEOUT,
            validator=ENTRY_VALIDATOR,
            master=self.target.master_api,
        )
        try:
            info = client.show_info()
            layout, warning = resolve_layout(
                [m.path for m in client.list_maps()],
                version=parse_version(info.get("Version", "")),
                configured_shards=self.engine.settings.map_shards,
                map_dir=self.target.map_dir,
            )
        except BaseException:
            client.close()
            raise
        if warning:
            log.warning("sync: " + warning, extra={"target": self.name})
        self._client, self._layout = client, layout
        self.watch.connected()
        if self.target.map_dir:
            self._writer = self.engine.map_writer(self.target.map_dir, layout)
        # Whatever HAProxy holds is unknown until a resync (a no-op if one is asked for).
        self.resyncs.request(ResyncReason.RECONNECT)

    def _unreachable(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        was = self._reachable
        self._reachable = False
        self.engine.metrics.target_up.labels(self.name).set(0)
        if self._client is not None:
            self._client.close()
            self._client = None
        # Whatever HAProxy holds now is unknown: the next success starts with a resync.
        self.resyncs.request(ResyncReason.RECONNECT)
        if was or error != self._last_error:
            log.warning(
                "sync: target unreachable",
                extra={"target": self.name, "runtime_api": self.target.runtime_api, "error": error},
            )
        if error != self._last_error:
            self._last_error = error
            # The store may be down too; the status shows the target unreachable anyway.
            with contextlib.suppress(SQLAlchemyError):
                state.record_error(self.engine.db, self.name, error)

    def _became_reachable(self) -> None:
        if not self._reachable:
            self._reachable = True
            self.engine.metrics.target_up.labels(self.name).set(1)
            if self._last_error is not None:
                log.info("sync: target reachable again", extra={"target": self.name})
            self._last_error = None

    # ---- resync and follow

    def _resync(self) -> None:
        client, layout = self._client, self._layout
        assert client is not None and layout is not None
        # Taken whole, before the store is read: a request made from now on is for after
        # this resync's snapshot, so it stays pending for the next one.
        reasons = self.resyncs.take()
        if not reasons:
            return
        try:
            with (
                self.overlay.shard_writes()
            ):  # no drain step in between: it would write older values
                result = full_resync(
                    self.engine.db, client, layout, self.name, reasons[0],
                    writer=self._writer, metrics=self.engine.metrics,
                )  # fmt: skip
                # The resync cleared the overlay map, after the shards took the snapshot.
                self.overlay.reset(layout, client.worker_pid, result.entries)
        except BaseException:
            self.resyncs.restore(reasons)
            raise
        self.watch.resynced(client, layout)
        self._last_drift_check = time.monotonic()
        self._became_reachable()
        self._advance(result.seq)

    def _follow(self) -> None:
        while not self.engine.stopping.is_set():
            batch = read_changes(self.engine.db, self._cursor, BATCH)
            if not batch:
                self._caught_up_at = time.monotonic()
                self.engine.advanced(self.name, self._cursor)  # refreshes the lag gauge
                return
            self.engine.saw_head(batch[-1].change.seq)
            if len(batch) == BATCH:
                with self.engine.db.read() as conn:
                    head = head_seq(conn)
                if head - self._cursor > BACKLOG_RESYNC:
                    self.resyncs.request(ResyncReason.BACKLOG)
                    self._resync()
                    continue
            self._apply(batch)

    def _apply(self, batch: Sequence[TimedChange]) -> None:
        client, layout = self._client, self._layout
        assert client is not None and layout is not None
        coalesced = coalesce(tc.change for tc in batch)
        overlay = layout.overlay
        try:
            if overlay is not None and self.overlay.room_for(len(coalesced)):
                result = self._into_overlay(client, overlay, coalesced)
                expected = _expected(coalesced, result)
                counts = read_back_overlay(client, overlay, expected)
            else:
                result = self._into_shards(client, layout, coalesced)
                counts = read_back(client, layout, _expected(coalesced, result))
        except HAProxyRuntimeError:
            # Fail closed: a partly applied batch is unknown state; never blindly resend.
            self.resyncs.request(ResyncReason.APPLY_ERROR)
            raise
        deprovisioned = [tc.change.identity_key for tc in batch if tc.change.deprovision]
        if self._writer is not None and deprovisioned:
            # Files before confirmation: the live worker already denies (applied above); a
            # reload racing this batch must load files that lack the revoked access, and the
            # worker check below runs after this write, so a reload in between is caught and
            # resynced before anything is confirmed. Grants may lag in files (debounced):
            # over-denial until the post-reload resync is safe, over-grant is not.
            if overlay is not None:
                # The overlay file (every change the shard files lack, at its current
                # value) is tiny, so this is off the O(shard) path.
                self._writer.write_overlay()
            else:
                self._writer.write_shards_of(self.engine.db, deprovisioned)
        reason = self.watch.reached_elsewhere(client)
        if reason is not None:
            # Never confirm a batch the serving worker may lack: a resync on it confirms it.
            self.resyncs.request(reason)
            if reason is ResyncReason.RELOAD:
                client.reconnect()  # ours still reaches the old worker
            raise _Unconfirmed
        if counts.total:
            state.record_drift(
                self.engine.db, self.name, source="readback", missing=counts.missing,
                extra=counts.extra, wrong=counts.wrong, seq=batch[-1].change.seq,
            )  # fmt: skip
            self.engine.metrics.drift_repairs.labels(self.name).inc()
            log.warning(
                "sync: read-back mismatch, resyncing",
                extra={"target": self.name, "missing": counts.missing,
                       "extra": counts.extra, "wrong": counts.wrong},
            )  # fmt: skip
            self.resyncs.request(ResyncReason.READBACK)
            raise _Unconfirmed
        self._confirm(batch, result)
        if result.deleted_keys:
            self.watch.revoke_on_old_workers(client, layout, result.deleted_keys)

    def _into_overlay(
        self, client: RuntimeClient, path: str, coalesced: Mapping[str, MapChange]
    ) -> BatchResult:
        """The fast path: each key's final value (or the tombstone) into the overlay map; the
        shards follow (the drainer). No lock is held while sending: only this thread writes
        the overlay map or changes which keys it holds."""
        values = {k: c.value for k, c in coalesced.items()}
        rejected = apply_overlay(client, path, values, self.overlay.held_among(values))
        refused = set(rejected)
        sent = {k: v for k, v in values.items() if k not in refused}
        self.overlay.put(sent)
        return BatchResult(
            set_keys=[k for k, v in sent.items() if v is not None],
            deleted_keys=[k for k, v in sent.items() if v is None],
            added=0,  # the entry count changes when the shards do (the drainer)
            removed=0,
            rejected=rejected,
        )

    def _into_shards(
        self, client: RuntimeClient, layout: MapLayout, coalesced: Mapping[str, MapChange]
    ) -> BatchResult:
        """A batch too big for the overlay goes straight to the shards; the overlay's
        entries for its keys are deleted after (until then they show an older value)."""
        with self.overlay.shard_writes():
            result = apply_batch(client, layout, coalesced)
            if layout.overlay is not None:
                held = self.overlay.shards_took(list(coalesced))
                if held:
                    client.delete_many(layout.overlay, held)
                    self.overlay.forget(held)
        return result

    def _confirm(self, batch: Sequence[TimedChange], result: BatchResult) -> None:
        """HAProxy holds the batch, read back, files safe, same worker: confirm it. Waiters
        are released now; the durable record goes to the recorder, in order."""
        applied = now_iso()
        entries = self.overlay.add_entries(result.added - result.removed)
        self._became_reachable()
        self._advance(batch[-1].change.seq)
        self.engine.record(
            functools.partial(
                state.record_applied, self.engine.db, self.name,
                first_seq=batch[0].change.seq, last_seq=batch[-1].change.seq,
                set_keys=result.set_keys, deleted_keys=result.deleted_keys,
                applied=applied, entries=entries,
            )
        )  # fmt: skip
        applied_at = state.parse_ts(applied)
        histogram = self.engine.metrics.propagation.labels(self.name)
        for tc in batch:
            histogram.observe(max(0.0, (applied_at - state.parse_ts(tc.created)).total_seconds()))

    def _retire(self) -> None:
        """Delete drained keys from the overlay map: their shards hold the same value, so a
        request sees no change; the overlay stays small."""
        client, layout = self._client, self._layout
        if client is None or layout is None or layout.overlay is None:
            return
        keys = self.overlay.retirable(RETIRE_BATCH)
        if keys:
            client.delete_many(layout.overlay, keys)
            self.overlay.forget(keys)

    def _advance(self, seq: int) -> None:
        self._cursor = seq
        self.engine.advanced(self.name, seq)

    # ---- restarts, reloads, external commits, drift

    def _periodic(self) -> None:
        client, layout = self._client, self._layout
        assert client is not None and layout is not None
        now = time.monotonic()
        if self.watch.due(now):
            reason = self.watch.probe(client, layout)
            if reason is not None:
                self.resyncs.request(reason)
                if reason is not ResyncReason.EXTERNAL_COMMIT:
                    client.reconnect()  # a fresh connection reaches the current worker
                return
        interval = self.engine.settings.drift_check_interval
        if (
            interval > 0
            and self.resyncs.pending() is None
            and now - self._last_drift_check >= interval
        ):
            self._drift_check(client, layout)

    def _drift_check(self, client: RuntimeClient, layout: MapLayout) -> None:
        self._last_drift_check = time.monotonic()
        with self.overlay.shard_writes():  # shards and overlay read as one view
            counts = drift_check(self.engine.db, client, layout, self.name, self._cursor)
        if counts is None or not counts.total:
            return
        self.engine.metrics.drift_repairs.labels(self.name).inc()
        log.warning(
            "sync: drift found, repairing",
            extra={"target": self.name, "missing": counts.missing,
                   "extra": counts.extra, "wrong": counts.wrong},
        )  # fmt: skip
        self.resyncs.request(ResyncReason.DRIFT)


def _expected(coalesced: Mapping[str, MapChange], result: BatchResult) -> dict[str, str | None]:
    """What a read-back must find: every key sent, at its final value (None: absent)."""
    refused = set(result.rejected)
    return {k: c.value for k, c in coalesced.items() if k not in refused}
