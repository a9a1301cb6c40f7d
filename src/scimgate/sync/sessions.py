"""Cutting live sessions: when an identity loses a route, shut its established streams on
that route in every worker of a target, old workers after a reload included.

The follower hands over, after it confirmed a batch that revoked anything, each revoked
key's newest value (:meth:`SessionCutter.offer`); this thread then, per worker the master
lists (``show proc``): reads the in-use entries of the live-session table
(``policy.sessions``: identity key | route | frontend | client), keeps those whose route
the new value no longer allows, finds the client's streams in ``show sess`` and shuts each
after re-reading it (``haproxy.sessions.WorkerStreams.shut_if_still``). Each cut is
counted (``scimgate_sessions_cut_total``) and audited (``session.cut``, through the
recorder). A sweep every ``live_session_sweep_seconds`` (default 30 s; 0: none) checks
every in-use entry against the store, so a cut missed while HAProxy was unreachable, or a
deprovisioning committed before a restart of scimgate, still ends the stream.

Does: the cutting, on its own thread (``sync-cut-<target>``), off the follower's path: the
SCIM response is not delayed by it.
Does not: touch maps, or shut a stream it cannot tie to the identity (a key that does not
parse, a stream whose address changed).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from scimgate.audit import log as audit
from scimgate.config import Settings, TargetConfig
from scimgate.haproxy import HAProxyRuntimeError, RuntimeAddress, RuntimeClient, show_proc
from scimgate.haproxy.sessions import Stream, WorkerStreams
from scimgate.metrics import Metrics
from scimgate.policy.model import Policy, PolicyError, load_policy
from scimgate.policy.sessions import SESSIONS_TABLE, TrackedStream, parse_tracked, route_allows
from scimgate.store.db import Database, now_iso
from scimgate.sync import state
from scimgate.sync.threads import engine_thread

log = logging.getLogger("scimgate.sync")

WORKER_TIMEOUT = 2.0


@dataclass(frozen=True)
class Cut:
    """One stream shut."""

    target: str
    pid: int
    identity_key: str
    route: str
    client: str
    reason: str  # "revoked" (a SCIM write) or "sweep"


class SessionCutter:
    """One target's cutter. ``offer`` is called from the follower's thread; everything
    else runs on this cutter's thread."""

    def __init__(
        self,
        target: TargetConfig,
        settings: Settings,
        db: Database,
        metrics: Metrics,
        stopping: threading.Event,
        record: Callable[[Callable[[], object]], None],
    ) -> None:
        self.target = target
        self._recorder = record  # the engine's recorder: audit events in order, off this path
        self._settings = settings
        self._db = db
        self._metrics = metrics
        self._stopping = stopping
        self.wake = threading.Event()
        # Set by the follower after a full resync: the changes a resync applied were never
        # offered one by one, so every tracked stream is checked against the store at once.
        self._sweep_requested = threading.Event()
        # _lock guards _pending (identity key -> newest value, None = no entry). A leaf lock.
        self._lock = threading.Lock()
        self._pending: dict[str, str | None] = {}
        self._policy: tuple[float, Policy] | None = None  # (mtime, policy): this thread's
        self._direct: RuntimeClient | None = None  # this thread's stats-socket connection
        # How often every in-use entry is checked against the store, whatever was offered
        # (settings.live_session_sweep_seconds; 0: never).
        self._sweep_seconds = settings.live_session_sweep_seconds
        self._next_sweep = time.monotonic() + (self._sweep_seconds or math.inf)
        self.thread = engine_thread(self._run, f"sync-cut-{target.name}")

    # ---- any thread

    def offer(self, values: Mapping[str, str | None]) -> None:
        """Revoked keys and their newest values: cut what they no longer allow."""
        if not values:
            return
        with self._lock:
            self._pending.update(values)
        self.wake.set()

    def sweep_soon(self) -> None:
        """Sweep now (whatever ``live_session_sweep_seconds`` says, 0 included): called after
        a full resync, which applies changes without offering them."""
        self._sweep_requested.set()
        self.wake.set()

    # ---- this thread

    def _run(self) -> None:
        try:
            state.record_cutter_start(self._db, self.target.name, now_iso())
        except Exception:  # status shows no count then; cutting goes on
            log.exception("sync: could not record the cutter's start")
        while not self._stopping.is_set():
            self.wake.wait(min(1.0, max(0.0, self._next_sweep - time.monotonic())))
            if self._stopping.is_set():
                return
            self.wake.clear()
            with self._lock:
                pending, self._pending = self._pending, {}
            try:
                if pending:
                    self.cut(pending, "revoked")
                requested = self._sweep_requested.is_set()
                if requested or time.monotonic() >= self._next_sweep:
                    self._sweep_requested.clear()
                    self._next_sweep = time.monotonic() + (self._sweep_seconds or math.inf)
                    self._sweep_and_record()
            except (HAProxyRuntimeError, OSError) as exc:
                self._close_direct()
                # The sweep retries; what this pass missed is cut then.
                log.warning(
                    "sync: could not cut live sessions",
                    extra={"target": self.target.name, "error": str(exc)},
                )
            except Exception:  # a bug must not end the thread
                log.exception("sync: session cutter error", extra={"target": self.target.name})
        self._close_direct()

    def _close_direct(self) -> None:
        if self._direct is not None:
            self._direct.close()
            self._direct = None

    def _direct_to(self, pids: list[int]) -> RuntimeClient | None:
        """The persistent stats-socket connection, if the worker it reaches is one of
        ``pids`` (after a reload it stays on the old worker: still useful, for that one)."""
        if self._direct is None:
            client = RuntimeClient(self.target.runtime_api, WORKER_TIMEOUT)
            try:
                client.show_info()  # sets client.worker_pid
            except (HAProxyRuntimeError, OSError):
                client.close()
                raise
            self._direct = client
        if self._direct.worker_pid not in pids:
            self._close_direct()  # its worker is gone: the next pass opens a fresh one
            return None
        return self._direct

    def _load_policy(self) -> Policy | None:
        path = self._settings.policy_file
        if path is None:
            return None
        try:
            mtime = Path(path).stat().st_mtime
            if self._policy is None or self._policy[0] != mtime:
                self._policy = (mtime, load_policy(path))
        except (OSError, PolicyError) as exc:
            log.warning("sync: session cutter has no policy", extra={"error": str(exc)})
            return None if self._policy is None else self._policy[1]
        return self._policy[1]

    def _workers(self) -> list[WorkerStreams]:
        """Every worker of the target: through the master CLI (old workers too), else the
        stats socket's one worker."""
        if self.target.master_api:
            master = RuntimeAddress.parse(self.target.master_api)
            procs = show_proc(master, WORKER_TIMEOUT)
            pids = procs.worker_pids + [w.pid for w in procs.old_workers]
            direct = self._direct_to(pids)
            reached = direct.worker_pid if direct is not None else None
            return [
                WorkerStreams(
                    master, pid, WORKER_TIMEOUT, direct=direct if pid == reached else None
                )
                for pid in pids
            ]
        return [WorkerStreams(RuntimeAddress.parse(self.target.runtime_api), None, WORKER_TIMEOUT)]

    def cut(self, values: Mapping[str, str | None], reason: str) -> list[Cut]:
        """Shut every live stream of these keys on a route their value no longer allows."""
        policy = self._load_policy()
        if policy is None:
            return []
        cuts: list[Cut] = []
        for worker in self._workers():
            doomed: list[TrackedStream] = []
            for entry in worker.table(SESSIONS_TABLE):
                tracked = parse_tracked(entry.key) if entry.in_use > 0 else None
                if tracked is None or tracked.identity_key not in values:
                    continue
                value = values[tracked.identity_key]
                if not route_allows(policy, tracked.route, value, tracked.kind):
                    doomed.append(tracked)
            if doomed:
                cuts += self._shut(worker, doomed, reason)
        if cuts:
            self._metrics.sessions_cut.labels(self.target.name).inc(len(cuts))
            self._record(cuts)
        return cuts

    def _shut(self, worker: WorkerStreams, doomed: list[TrackedStream], reason: str) -> list[Cut]:
        by_client: dict[tuple[str, str], list[Stream]] = {}
        for stream in worker.streams():
            by_client.setdefault((stream.client, stream.frontend), []).append(stream)
        cuts = []
        for tracked in doomed:
            # HTTP/2: every stream of that client connection (one identity per connection
            # is the common case; see docs/live-sessions.md).
            for stream in by_client.get((tracked.client, tracked.frontend), []):
                if worker.shut_if_still(stream):
                    cuts.append(
                        Cut(self.target.name, worker.pid or 0, tracked.identity_key,
                            tracked.route, tracked.client, reason)
                    )  # fmt: skip
        return cuts

    def _sweep_and_record(self) -> None:
        """A sweep, its outcome recorded for ``scimgate status`` (a failure too, then
        raised on: the loop logs it and the next sweep retries)."""
        when = now_iso()
        try:
            outcome = self.sweep_outcome()
        except (HAProxyRuntimeError, OSError) as exc:
            state.record_sweep(self._db, self.target.name, when, f"error: {exc}")
            raise
        streams, cuts = outcome
        state.record_sweep(
            self._db, self.target.name, when, f"ok: {streams} streams checked, {len(cuts)} cut"
        )

    def sweep(self) -> list[Cut]:
        """Every in-use entry of every worker against the store's current values."""
        return self.sweep_outcome()[1]

    def sweep_outcome(self) -> tuple[int, list[Cut]]:
        """(tracked streams checked, cuts) of a sweep."""
        keys: set[str] = set()
        streams = 0
        for worker in self._workers():
            for entry in worker.table(SESSIONS_TABLE):
                tracked = parse_tracked(entry.key) if entry.in_use > 0 else None
                if tracked is not None:
                    streams += 1
                    keys.add(tracked.identity_key)
        if not keys:
            return 0, []
        return streams, self.cut(state.read_entries_of(self._db, sorted(keys)), "sweep")

    def _record(self, cuts: list[Cut]) -> None:
        for c in cuts:
            log.info(
                "sync: live session cut",
                extra={"target": c.target, "pid": c.pid, "key": c.identity_key,
                       "route": c.route, "client": c.client, "reason": c.reason},
            )  # fmt: skip

        when = now_iso()

        def write() -> None:
            with self._db.write(background=True) as conn:
                state.record_sessions_cut(conn, self.target.name, len(cuts), when)
                for c in cuts:
                    audit.append(
                        conn,
                        "session.cut",
                        detail={"target": c.target, "worker_pid": c.pid,
                                "identity_key": c.identity_key, "route": c.route,
                                "client": c.client, "reason": c.reason},
                    )  # fmt: skip

        self._recorder(write)
