"""The drainer: brings one target's shards up to its overlay, one key per step, on its own
thread and its own Runtime API connection.

A step walks one shard (``set``/``del map`` are O(shard) on 2.6: ~3-15 ms at 62k entries,
``bench/scale_haproxy.py``), and the follower's next change must not queue behind it. The
drainer only writes shards: it reports each drained key to the :class:`Overlay`, and the
follower deletes it from the overlay map (the overlay map has one writer, the follower). A
failed step leaves the key pending and in the overlay, which still decides for it (steps
are idempotent).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from scimgate.config import TargetConfig
from scimgate.haproxy import HAProxyRuntimeError, RuntimeClient
from scimgate.metrics import Metrics
from scimgate.sync.apply import ENTRY_VALIDATOR, apply_values, replace_behind_overlay
from scimgate.sync.overlay import Overlay

log = logging.getLogger("scimgate.sync")

TICK = 0.2  # wake-up without a nudge from the follower
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
CLIENT_TIMEOUT = 10.0


class Drainer:
    """One target's drain thread. Sees only the target's :class:`Overlay` (what to drain,
    and where to report), the stop event, its gauge, and ``drained``: a nudge for whoever
    retires drained keys (the follower), sent after each run of steps."""

    def __init__(
        self,
        target: TargetConfig,
        overlay: Overlay,
        stopping: threading.Event,
        metrics: Metrics,
        drained: Callable[[], None],
    ) -> None:
        self.name = target.name
        self.drained = drained
        self.runtime_api = target.runtime_api
        self.overlay = overlay
        self.stopping = stopping
        self.metrics = metrics
        self.wake = threading.Event()
        self.steps = 0  # drained keys (this thread writes it; read for tests and logs)
        self._client: RuntimeClient | None = None  # this thread's own connection
        self.thread = threading.Thread(
            target=self._run, name=f"sync-drain-{self.name}", daemon=True
        )

    def _run(self) -> None:
        stop = self.stopping
        while not stop.is_set():
            self.wake.wait(TICK)
            self.wake.clear()
            steps = self.steps
            try:
                while not stop.is_set() and self.step():
                    pass
            except (HAProxyRuntimeError, OSError) as exc:
                log.info(
                    "sync: drain step failed, retrying",
                    extra={"target": self.name, "error": f"{type(exc).__name__}: {exc}"},
                )
                self._close()
                stop.wait(BACKOFF_MIN)
            except Exception:  # a bug must not silently end the drainer
                log.exception("sync: drainer error", extra={"target": self.name})
                self._close()
                stop.wait(BACKOFF_MAX)
            if self.steps != steps:
                self.drained()
            self.metrics.overlay_entries.labels(self.name).set(self.overlay.held_count)
        self._close()

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _connected(self, pid: int) -> RuntimeClient | None:
        """A connection to the worker the follower resynced (``pid``), or None for now."""
        if self._client is None:
            self._client = RuntimeClient(
                self.runtime_api, CLIENT_TIMEOUT, validator=ENTRY_VALIDATOR
            )
        if self._client.worker_pid != pid:
            self._client.reconnect()
            if self._client.worker_pid != pid:
                return None  # a restart or reload the follower has not resynced yet
        return self._client

    def step(self) -> bool:
        """Drain one key; False when there is nothing (drainable) to do."""
        with self.overlay.shard_writes():
            step = self.overlay.next_step()
            if step is None:
                return False
            client = self._connected(step.worker_pid)
            if client is None:
                return False
            if step.covered:
                result = replace_behind_overlay(client, step.layout, step.key, step.value)
            else:
                result = apply_values(client, step.layout, {step.key: step.value})
            self.overlay.drained(step, result.added - result.removed)
        self.steps += 1
        return True
