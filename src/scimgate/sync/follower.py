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
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

import scimgate.sync.state as state
from scimgate.config import Settings, TargetConfig
from scimgate.haproxy import HAProxyRuntimeError, RuntimeClient, parse_version
from scimgate.metrics import Metrics
from scimgate.store.db import Database
from scimgate.store.outbox import ChangeLogReader, MapChange, TimedChange, head_seq
from scimgate.sync.apply import (
    ENTRY_VALIDATOR,
    BatchResult,
    DriftCounts,
    apply_batch,
    coalesce,
    put_overlay,
    read_back,
)
from scimgate.sync.drainer import Drainer
from scimgate.sync.layout import LayoutError, MapLayout, resolve_layout
from scimgate.sync.mapfiles import MapFileWriter
from scimgate.sync.overlay import Overlay
from scimgate.sync.reasons import ResyncReason, ResyncRequests
from scimgate.sync.reconcile import drift_check, full_resync
from scimgate.sync.sessions import SessionCutter
from scimgate.sync.threads import engine_thread
from scimgate.sync.watch import WorkerWatch

log = logging.getLogger("scimgate.sync")

TICK = 0.2  # follower wake-up without a notify (other processes' writes, timers)
# (``settings.change_poll_interval`` overrides it: an agent woken by LISTEN polls less often)
BATCH = 5000  # change-log rows per read
BACKLOG_RESYNC = 50_000  # further behind than this: one resync beats replaying the log
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
CLIENT_TIMEOUT = 10.0
#: Drained keys deleted from the overlay map per turn (bounds the delay a change arriving
#: meanwhile can see: one pipelined exchange of ``del map`` on a small map).
RETIRE_BATCH = 256
#: Pending keys that wake the drainer before its own tick (drainer.TICK).
DRAIN_WAKE_KEYS = 64
#: Handed-over changes kept for the next batch (beyond: read from the change log).
INBOX_MAX = BATCH
#: Longest a batch waits for the commits of writes under way (group commit, see _gather).
GROUP_WAIT = 0.005


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

    def record(self, job: Callable[[], object] | state.AppliedBatch) -> None:
        """Write a durable record later, in order (the recorder; batches are group
        committed)."""
        ...

    def saw_head(self, seq: int) -> None:
        """A change up to ``seq`` exists."""
        ...

    def advanced(self, target: str, cursor: int) -> None:
        """``target`` confirmed every change up to ``cursor``."""
        ...

    def writes_in_progress(self) -> int:
        """Write transactions of this process under way (a hint: changes coming soon)."""
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
        self.cutter = SessionCutter(
            target, engine.settings, engine.db, engine.metrics, engine.stopping, engine.record
        )
        self.thread = engine_thread(self._run, f"sync-{self.name}")
        self._client: RuntimeClient | None = None
        self._layout: MapLayout | None = None
        self._writer: MapFileWriter | None = None
        self._cursor = 0
        self._reachable = False
        self._last_error: str | None = None
        self._haproxy_version: str | None = None
        self._caught_up_at: float | None = None  # monotonic
        self._last_drift_check = time.monotonic()
        self._changes = ChangeLogReader(engine.db)  # this thread's connection to the log
        self._told = -1  # the cursor last reported to the engine
        # _inbox_lock: _inbox, the changes this process's writes handed over after their
        # commit (seq -> change). A leaf lock, held for a few dict operations.
        self._inbox_lock = threading.Lock()
        self._inbox: dict[int, TimedChange] = {}

    # ---- lifecycle (the engine's thread)

    def start(self, cursor: int) -> None:
        self._cursor = cursor
        self.thread.start()
        self.drainer.thread.start()
        self.cutter.thread.start()

    def nudge(self) -> None:
        """Look at the change log now (and on stop: notice it)."""
        self.wake.set()

    def offer(self, changes: Sequence[TimedChange]) -> None:
        """Committed changes, handed over by the write that made them (any thread): the
        next batch takes them from here instead of reading the store again, when they
        follow the cursor without a gap. Beyond INBOX_MAX they are not kept (the change log
        has them)."""
        with self._inbox_lock:
            if len(self._inbox) < INBOX_MAX:
                for tc in changes:
                    self._inbox[tc.change.seq] = tc
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

    @property
    def worker_pid(self) -> int | None:
        """The HAProxy worker our connection reaches (None while not connected)."""
        client = self._client
        return client.worker_pid if client is not None else None

    @property
    def haproxy_version(self) -> str | None:
        return self._haproxy_version

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
                if self.overlay.to_drain >= DRAIN_WAKE_KEYS:
                    # Fewer keys wait for the drainer's own tick: the overlay map already
                    # decides for them, and a drain step per change would cost a thread
                    # hand-over per change.
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
            # Cleared by _follow right before each read of the change log: a notify that
            # came after the last read ends this wait at once, none is lost.
            self.wake.wait(self.engine.settings.change_poll_interval or TICK)
        if self._client is not None:
            self._client.close()
        self._changes.close()
        if self.watch.link is not None:
            self.watch.link.close()

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
        self._haproxy_version = info.get("Version") or None
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
        self.watch.before_resync(client)
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
        self._last_drift_check = time.monotonic()
        reached = self.watch.resynced(client, layout)
        if reached is not None:
            # The resync went to a worker that no longer serves new connections (a reload
            # began before it): do it again on the current one, confirm nothing.
            self.resyncs.request(reached)
            client.reconnect()
            raise _Unconfirmed
        self._became_reachable()
        self._advance(result.seq)
        # A resync applies deprovisions without offering them to the cutter (a reload or a
        # restart racing a deactivation): it checks every live stream against the store now.
        self.cutter.sweep_soon()

    def _follow(self) -> None:
        """Group commit: each read takes every change committed since the cursor (up to
        BATCH) as one batch: one pipelined exchange, one overlay-file write, one worker
        check, one confirmation and one record, however many changes it holds. Reads again
        only if a notify came meanwhile (or the batch was full): an empty read per batch
        would cost a round trip to the store for nothing."""
        while not self.engine.stopping.is_set():
            self.wake.clear()  # before the read: a notify from now on is for a later read
            batch = self._next_changes(self._cursor, BATCH)
            if not batch:
                self._caught_up()
                return
            batch = self._gather(batch)
            self.engine.saw_head(batch[-1].change.seq)
            if len(batch) == BATCH:
                with self.engine.db.read() as conn:
                    head = head_seq(conn)
                if head - self._cursor > BACKLOG_RESYNC:
                    self.resyncs.request(ResyncReason.BACKLOG)
                    self._resync()
                    continue
            self._apply(batch)
            if len(batch) < BATCH and not self.wake.is_set():
                self._caught_up()
                return

    def _next_changes(self, after: int, limit: int) -> list[TimedChange]:
        """Up to ``limit`` changes after seq ``after``: those handed over if they follow it
        without a gap (seqs are given in commit order under the writers' lock, so a run from
        after + 1 is exactly the log's next rows), else read from the change log (other
        processes' writes, a gap, a resync's jump)."""
        with self._inbox_lock:
            run: list[TimedChange] = []
            if self._inbox:
                seq = after + 1
                while len(run) < limit and (tc := self._inbox.pop(seq, None)) is not None:
                    run.append(tc)
                    seq += 1
                if not run:
                    for old in [s for s in self._inbox if s <= after]:
                        del self._inbox[old]  # passed by a read or a resync
        return run or self._changes.read(after, limit)

    def _gather(self, batch: list[TimedChange]) -> list[TimedChange]:
        """Group commit across writers: while SCIM writes of this process are under way
        (waiting for the writers' lock or running), wait up to GROUP_WAIT for their commits
        and take them into this batch: each batch costs the same (one exchange, one file
        write, one record) whatever it holds. With no write under way (a lone change, the
        propagation path) nothing waits."""
        deadline = time.monotonic() + GROUP_WAIT
        while len(batch) < BATCH and self.engine.writes_in_progress() > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.wake.wait(remaining):
                break
            self.wake.clear()
            batch = batch + self._next_changes(batch[-1].change.seq, BATCH - len(batch))
        return batch

    def _caught_up(self) -> None:
        """Everything this process knows of is applied (other processes' writes are found
        by the next TICK)."""
        self._caught_up_at = time.monotonic()
        if self._told != self._cursor:
            self._advance(self._cursor)  # refreshes the lag gauge

    def _apply(self, batch: Sequence[TimedChange]) -> None:
        client, layout = self._client, self._layout
        assert client is not None and layout is not None
        coalesced = coalesce(tc.change for tc in batch)
        overlay = layout.overlay
        try:
            if overlay is not None and self.overlay.room_for(len(coalesced)):
                result, counts = self._into_overlay(client, overlay, coalesced)
            else:
                result = self._into_shards(client, layout, coalesced)
                counts = read_back(client, layout, _expected(coalesced, result))
        except HAProxyRuntimeError:
            # Fail closed: a partly applied batch is unknown state; never blindly resend.
            self.resyncs.request(ResyncReason.APPLY_ERROR)
            raise
        deprovisions = any(tc.change.deprovision for tc in batch)
        if deprovisions:
            # The map denies the next request now; established streams (WebSockets,
            # tunnels, long downloads) run no rule again: the cutter shuts them, on its own
            # thread, while this one writes files and confirms.
            revoked = {tc.change.identity_key for tc in batch if tc.change.deprovision}
            self.cutter.offer({k: coalesced[k].value for k in revoked if k in coalesced})
        if self._writer is not None:
            # Files before confirmation: the live worker already denies (applied above); a
            # reload racing this batch must load files that lack the revoked access, and the
            # worker check below runs after this write, so a reload in between is caught and
            # resynced before anything is confirmed. Grants may lag in files (debounced):
            # over-denial until the post-reload resync is safe, over-grant is not.
            if overlay is not None:
                # The overlay file (every change the shard files lack, at its newest value)
                # is kept from the batches themselves and is tiny: off the O(shard) path,
                # and the store is not read again.
                self._writer.note(coalesced.values(), write=deprovisions)
            elif deprovisions:
                deprovisioned = [tc.change.identity_key for tc in batch if tc.change.deprovision]
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
    ) -> tuple[BatchResult, DriftCounts]:
        """The fast path: each key's final value (or the tombstone) into the overlay map
        and read back, in one pipelined exchange; the shards follow (the drainer). No lock
        is held while sending: only this thread writes the overlay map or changes which
        keys it holds."""
        values = {k: c.value for k, c in coalesced.items()}
        # Drained keys leave the overlay map in the same exchange (not a key of this batch:
        # those become pending again).
        retire = [k for k in self.overlay.retirable(RETIRE_BATCH) if k not in values]
        rejected, counts = put_overlay(
            client, path, values, self.overlay.held_among(values), retire=retire
        )
        self.overlay.forget(retire)
        refused = set(rejected)
        sent = {k: v for k, v in values.items() if k not in refused}
        self.overlay.put(sent)
        result = BatchResult(
            set_keys=[k for k, v in sent.items() if v is not None],
            deleted_keys=[k for k, v in sent.items() if v is None],
            added=0,  # the entry count changes when the shards do (the drainer)
            removed=0,
            rejected=rejected,
        )
        return result, counts

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
        are released now; the durable record goes to the recorder, in order (group
        committed with whatever else is waiting there)."""
        applied_at = datetime.now(UTC)
        applied = applied_at.strftime(state.TS_FORMAT)
        entries = self.overlay.add_entries(result.added - result.removed)
        self._became_reachable()
        self._advance(batch[-1].change.seq)
        self.engine.record(
            state.AppliedBatch(
                self.name, batch[0].change.seq, batch[-1].change.seq,
                result.set_keys, result.deleted_keys, applied, entries,
            )
        )  # fmt: skip
        self.engine.metrics.batches.labels(self.name).inc()
        histogram = self.engine.metrics.propagation.labels(self.name)
        logged: dict[str, float] = {}  # a SCIM write logs all its changes at one time
        for tc in batch:
            seconds = logged.get(tc.created)
            if seconds is None:
                seconds = (applied_at - state.parse_ts(tc.created)).total_seconds()
                logged[tc.created] = seconds
            histogram.observe(max(0.0, seconds))

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
        self._cursor = self._told = seq
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
