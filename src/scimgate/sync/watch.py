"""Watching one target's HAProxy for what makes our bookkeeping wrong: a restart (a new
worker that loaded the map files), a reload (new workers, and old ones still serving their
open connections with the maps they had), and a map version someone else committed.

Owned by the target's follower thread (no locks): the follower asks before it confirms a
batch and once per :data:`PROBE_INTERVAL`. Facts behind it: ``scimgate.haproxy.master``.

Before a batch is confirmed the question is "did a reload begin before the map files were
written?". With a master CLI on a unix socket it is answered by a :class:`MasterLink` opened
before the last resync: the master closes it when a reload begins, so one non-blocking peek
per batch answers it (no connection, no round trip). Without one (no master CLI, or one over
TCP, whose close may reach us late), a fresh Runtime API connection per batch checks which
worker serves new connections.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from scimgate.config import TargetConfig
from scimgate.haproxy import (
    HAProxyRuntimeError,
    MasterLink,
    MasterProcs,
    RuntimeAddress,
    RuntimeClient,
    WorkerChange,
    current_worker_pid,
    master_command,
    show_proc,
    worker_change,
    worker_command,
)
from scimgate.sync.layout import MapLayout
from scimgate.sync.reasons import ResyncReason

log = logging.getLogger("scimgate.sync")

PROBE_INTERVAL = 1.0  # restart/reload/external-commit detection
MASTER_TIMEOUT = 2.0

_REASON = {WorkerChange.RELOAD: ResyncReason.RELOAD, WorkerChange.RESTART: ResyncReason.RESTART}


class WorkerWatch:
    """Which worker our last resync reached, what the master said then, and which map
    versions we committed; compared with HAProxy's now."""

    def __init__(self, target: TargetConfig) -> None:
        self.target = target
        self._master = RuntimeAddress.parse(target.master_api) if target.master_api else None
        self._link = (
            MasterLink(self._master, MASTER_TIMEOUT)
            if self._master is not None and self._master.family == "unix"
            else None
        )
        self.resynced_pid: int | None = None  # the worker our last resync went to
        self.old_workers: list[int] = []  # after a reload: they still serve open connections
        # The master's reload counter when last asked. While the link is intact it is the
        # counter of the moment the link was opened (both are set together).
        self._reloads: int | None = None
        self._master_pid: int | None = None
        self._map_versions: dict[str, int] = {}
        self._last_probe = 0.0
        self.fresh_checks = 0  # per-batch fresh connections made (the fallback; tests)

    @property
    def link(self) -> MasterLink | None:
        return self._link

    def connected(self) -> None:
        """A new Runtime API connection: without a master link, note the master's reload
        counter now (best effort; the probe compares it)."""
        if self._link is not None or self._master is None:
            return
        self._reloads = None
        with contextlib.suppress(HAProxyRuntimeError, OSError):
            self._noted(show_proc(self._master, MASTER_TIMEOUT))

    def before_resync(self, client: RuntimeClient) -> None:
        """A resync is about to go through ``client``: from here on a reload must be
        noticed. Reopens the master link unless it is intact (a reload since it was opened
        would have closed it) and, if ``client`` reaches a worker the master no longer
        counts as current (an old one, after a reload), reconnects it. Best effort: if the
        master does not answer, the per-batch check uses fresh connections instead."""
        if self._link is None or self._link.intact():
            return
        self._reloads = None
        try:
            procs = self._link.open()
        except (HAProxyRuntimeError, OSError):
            return
        self._noted(procs)
        if client.worker_pid not in procs.worker_pids:
            client.reconnect()

    def _noted(self, procs: MasterProcs) -> None:
        self._reloads, self._master_pid = procs.reloads, procs.master.pid
        self.old_workers = [w.pid for w in procs.old_workers]

    def resynced(self, client: RuntimeClient, layout: MapLayout) -> ResyncReason | None:
        """A resync through ``client`` committed ``layout``'s shards. Returns RELOAD if the
        worker it reached is not one the intact master link counts as current (a
        connection that still reached an old worker): it must not be confirmed."""
        self.resynced_pid = client.worker_pid
        paths = set(layout.paths)
        self._map_versions = {m.path: m.curr_ver for m in client.list_maps() if m.path in paths}
        link = self._link
        if (
            link is not None
            and link.procs is not None
            and link.intact()
            and self.resynced_pid not in link.procs.worker_pids
        ):
            return ResyncReason.RELOAD
        return None

    def reached_elsewhere(self, client: RuntimeClient) -> ResyncReason | None:
        """Before confirming a batch: did it reach the worker that serves new requests?

        RESTART: ``client`` reconnected transparently to another worker, which loaded map
        files, not our runtime state. RELOAD: a reload began since the last resync, so the
        batch may never have reached the workers that serve new requests. With an intact
        master link this is one non-blocking peek; otherwise a fresh connection tells which
        worker new connections reach (~0.35 ms on a unix socket)."""
        if client.worker_pid != self.resynced_pid:
            return ResyncReason.RESTART
        if self._link is not None and self._reloads is not None:
            if self._link.intact():
                return None  # opened at counter _reloads, and no reload closed it since
            return self._relink()
        self.fresh_checks += 1
        if current_worker_pid(self.target.runtime_api) != self.resynced_pid:
            return ResyncReason.RELOAD
        return None

    def _relink(self) -> ResyncReason | None:
        """The link closed: a reload, a restart, or just the connection. Reopen and ask."""
        assert self._link is not None
        before, master_before = self._reloads, self._master_pid
        self._reloads = None
        try:
            procs = self._link.open()
        except (HAProxyRuntimeError, OSError):
            return ResyncReason.RELOAD  # the master re-executing refuses: unsure, resync
        self._noted(procs)
        if procs.master.pid != master_before:
            return ResyncReason.RESTART
        if before is None or procs.reloads != before:
            return ResyncReason.RELOAD
        if self.resynced_pid not in procs.worker_pids:
            return ResyncReason.RESTART
        return None

    def due(self, now: float) -> bool:
        if now - self._last_probe < PROBE_INTERVAL:
            return False
        self._last_probe = now
        return True

    def probe(self, client: RuntimeClient, layout: MapLayout) -> ResyncReason | None:
        """Restart, reload or someone else's commit since our resync: the reason to resync."""
        fresh = current_worker_pid(self.target.runtime_api)  # ours may still be the old one
        reloads_now: int | None = None
        if self._master is not None:
            procs = self._probe_master()
            if procs is not None:
                reloads_now = procs.reloads
                self.old_workers = [w.pid for w in procs.old_workers]
        change = worker_change(
            resynced_pid=self.resynced_pid,
            fresh_pid=fresh,
            connected_pid=client.worker_pid,
            reloads_before=self._reloads,
            reloads_now=reloads_now,
        )
        if change is not None:
            log.warning(
                "sync: HAProxy worker changed, resyncing",
                extra={
                    "target": self.target.name,
                    "reason": str(change),
                    "old_pid": self.resynced_pid,
                    "new_pid": fresh,
                },
            )
            return _REASON[change]
        versions = {m.path: m.curr_ver for m in client.list_maps()}
        if any(versions.get(p) != v for p, v in self._map_versions.items()):
            # Someone else committed a map version (e.g. `scimgate resync` from another
            # process): what it holds is no longer what we applied.
            return ResyncReason.EXTERNAL_COMMIT
        return None

    def _probe_master(self) -> MasterProcs | None:
        """``show proc`` on the link while it is intact (which keeps it in use); else on a
        fresh connection, leaving the counter alone: a reload found by the probe is
        resynced, and the resync reopens the link. None when the master does not answer
        (it refuses connections while it re-executes)."""
        assert self._master is not None
        try:
            if self._link is not None and self._link.intact():
                return self._link.show_proc()
            procs = show_proc(self._master, MASTER_TIMEOUT)
        except (HAProxyRuntimeError, OSError):
            return None
        if self._link is None:
            self._reloads = procs.reloads  # without a link, the counter follows the probe
        return procs

    def revoke_on_old_workers(
        self, client: RuntimeClient, layout: MapLayout, keys: Sequence[str]
    ) -> None:
        """Old workers (after a reload) serve their open connections with the map they had:
        send them the deletes too, through the master CLI (best effort; hard-stop-after
        bounds their life anyway)."""
        if self._master is None or not self.old_workers:
            return
        v = client.validator
        for pid in self.old_workers:
            for key in keys:
                path = v.map_path(layout.path_of(key))
                try:
                    master_command(
                        self._master, worker_command(pid, f"del map {path} {v.key(key)}"), 2.0
                    )
                except HAProxyRuntimeError as exc:
                    log.warning(
                        "sync: could not revoke on an old worker",
                        extra={"target": self.target.name, "pid": pid, "error": str(exc)},
                    )
                    break
