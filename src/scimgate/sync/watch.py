"""Watching one target's HAProxy for what makes our bookkeeping wrong: a restart (a new
worker that loaded the map files), a reload (new workers, and old ones still serving their
open connections with the maps they had), and a map version someone else committed.

Owned by the target's follower thread (no locks): the follower asks before it confirms a
batch and once per :data:`PROBE_INTERVAL`. Facts behind it: ``scimgate.haproxy.master``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from scimgate.config import TargetConfig
from scimgate.haproxy import (
    HAProxyRuntimeError,
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
        self.resynced_pid: int | None = None  # the worker our last resync went to
        self.old_workers: list[int] = []  # after a reload: they still serve open connections
        self._reloads: int | None = None  # the master's reload counter when last asked
        self._map_versions: dict[str, int] = {}
        self._last_probe = 0.0

    def connected(self) -> None:
        """A new Runtime API connection: note the master's reload counter (best effort)."""
        self._reloads = None
        if self._master is not None:
            with contextlib.suppress(HAProxyRuntimeError, OSError):
                self._reloads = show_proc(self._master, MASTER_TIMEOUT).reloads

    def resynced(self, client: RuntimeClient, layout: MapLayout) -> None:
        """A resync through ``client`` committed ``layout``'s shards."""
        self.resynced_pid = client.worker_pid
        paths = set(layout.paths)
        self._map_versions = {m.path: m.curr_ver for m in client.list_maps() if m.path in paths}

    def reached_elsewhere(self, client: RuntimeClient) -> ResyncReason | None:
        """Before confirming a batch: did it reach the worker that serves new requests?

        RESTART: ``client`` reconnected transparently to another worker, which loaded map
        files, not our runtime state. RELOAD: a new connection reaches another worker than
        ours (which stays alive for the old one), so the batch never reached the worker that
        serves new requests. One round trip (~0.35 ms on a unix socket)."""
        if client.worker_pid != self.resynced_pid:
            return ResyncReason.RESTART
        if current_worker_pid(self.target.runtime_api) != self.resynced_pid:
            return ResyncReason.RELOAD
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
            try:
                procs = show_proc(self._master, MASTER_TIMEOUT)
            except HAProxyRuntimeError:
                procs = None  # the master refuses connections while it re-executes
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
        if reloads_now is not None:
            self._reloads = reloads_now
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
