"""The drainer: brings one target's shards up to its overlay, a few keys per step, on its
own thread and its own Runtime API connection.

A key's step walks its shard (``del map`` is O(shard) on 2.6: ~3-4 ms at 62k entries,
``bench/scale_haproxy.py``; about 50 ns per entry, docs/haproxy-facts.md §2b), and the
follower's next change must not queue behind it. So a step takes as many keys as fit a walk
budget (:func:`keys_per_step`): one at 1M identities in 16 shards, hundreds at a few
thousand, sent as one pipelined exchange (every ``del``, then every ``add``). The drainer only
writes shards: it reports each drained key to the :class:`Overlay`, and the follower deletes
it from the overlay map (the overlay map has one writer, the follower). A failed step leaves
its keys pending and in the overlay, which still decides for them (steps are idempotent).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from scimgate.config import TargetConfig
from scimgate.haproxy import HAProxyRuntimeError, RuntimeClient
from scimgate.metrics import Metrics
from scimgate.sync.apply import ENTRY_VALIDATOR, apply_values, replace_many_behind_overlay
from scimgate.sync.overlay import Overlay
from scimgate.sync.threads import engine_thread

log = logging.getLogger("scimgate.sync")

TICK = 0.2  # wake-up without a nudge from the follower
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
CLIENT_TIMEOUT = 10.0
#: HAProxy time one step may spend walking shards: bounds the request stall a step causes
#: (the stall target is 10 ms at 1M identities).
STEP_WALK_BUDGET_S = 0.003
WALK_S_PER_ENTRY = 50e-9  # 2.6 ``del map``: 47 ms at 1M entries (docs/haproxy-facts.md §2b)
MAX_KEYS_PER_STEP = 256
#: Drained keys waiting to leave the overlay map that are worth nudging the follower for.
RETIRE_NUDGE_KEYS = 256


def keys_per_step(entries_per_shard: float | None) -> int:
    """How many keys one drain step takes: as many shard walks as fit the budget."""
    if entries_per_shard is None:
        return 1
    walk = max(entries_per_shard, 1.0) * WALK_S_PER_ENTRY
    return max(1, min(MAX_KEYS_PER_STEP, math.floor(STEP_WALK_BUDGET_S / walk)))


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
        self.retire_nudge = RETIRE_NUDGE_KEYS
        self._client: RuntimeClient | None = None  # this thread's own connection
        self.thread = engine_thread(self._run, f"sync-drain-{self.name}")

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
            if self.steps != steps and self.overlay.retirable_count >= self.retire_nudge:
                # Drained keys leave the overlay map with the follower's next batch, or at
                # its tick; this many are worth a turn of their own.
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
        """Drain the oldest pending keys (as many as :func:`keys_per_step` allows); False
        when there is nothing (drainable) to do."""
        with self.overlay.shard_writes():
            steps = self.overlay.next_steps(keys_per_step(self.overlay.entries_per_shard))
            if not steps:
                return False
            client = self._connected(steps[0].worker_pid)
            if client is None:
                return False
            covered = [st for st in steps if st.covered]
            if covered:
                layout = covered[0].layout
                result = replace_many_behind_overlay(
                    client, layout, {st.key: st.value for st in covered}
                )
                for st in covered:
                    # The batch's entry-count change is reported once, with its first key.
                    delta = result.added - result.removed if st is covered[0] else 0
                    self.overlay.drained(st, delta)
            for st in steps:
                if not st.covered:
                    one = apply_values(client, st.layout, {st.key: st.value})
                    self.overlay.drained(st, one.added - one.removed)
        self.steps += len(steps)
        return True
