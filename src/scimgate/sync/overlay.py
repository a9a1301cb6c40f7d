"""One target's overlay bookkeeping, with one owner: the :class:`Overlay`.

Rendered configs look a key up in the overlay map first and in its shard only when the
overlay has no entry (docs/architecture.md, "An overlay map in front of the shards"). So:

- the follower puts every change into the overlay (``add``/``set`` on a small map: fast on
  2.6, whose ``set``/``del map`` walk the whole map), confirms it, and queues the key as
  *pending*: its shard entry does not hold the desired value yet;
- the drainer brings one pending key's shard up to date per step and reports it *drained*;
- the follower then deletes drained keys from the overlay map (*retires* them): a request
  sees the overlay's entry until that ``del``, and the already updated shard after it.

Only the follower sends commands to the overlay map; only shard writers holding
:meth:`Overlay.shard_writes` send commands to the shards. This class holds what both need to
agree on and never does I/O itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from scimgate.policy.compiler import OVERLAY_TOMBSTONE
from scimgate.sync.layout import MapLayout

#: Most keys the overlay map holds: a batch that would take it past this goes straight to
#: the shards (bulk changes, where one walk per key matters less than the batch's total).
OVERLAY_LIMIT = 10_000


def overlay_value(value: str | None) -> str:
    """What the overlay holds for a desired value (None: the tombstone)."""
    return OVERLAY_TOMBSTONE if value is None else value


@dataclass(frozen=True)
class DrainStep:
    """One pending key to bring into its shard, in the layout and worker the overlay is for.
    ``covered``: the overlay holds the key, so the shard may briefly lack it (del + add)."""

    key: str
    value: str | None
    covered: bool
    layout: MapLayout
    worker_pid: int


class Overlay:
    """What one target's overlay map holds (as the follower put it there), which keys'
    shard entries lag their desired value (oldest first), which drained keys may leave the
    overlay, and how many entries the shards hold. Emptied by every resync (which clears the
    overlay map after the shards took the snapshot)."""

    def __init__(self) -> None:
        # _shard_writes: the shards' one writer at a time (a drain step, a resync, a bulk
        # batch; a drift check reads shards + overlay as one view under it). Taken before
        # _lock. Held across the writer's wire commands on purpose: waiting for it is waiting
        # for HAProxy's walk of a shard, and the deprovision path (the overlay) never takes it.
        self._shard_writes = threading.Lock()
        # _lock: _held, _pending, _drained, _entries, _layout, _worker_pid. Taken after
        # _shard_writes; never held across I/O (each method is a few dict operations).
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}  # key -> the overlay map's value (or the tombstone)
        self._pending: dict[str, str | None] = {}  # key -> desired value (None: delete)
        self._drained: dict[str, str | None] = {}  # key -> the value its shard now holds
        self._entries: int | None = None  # entries in the shards, None until a resync
        self._layout: MapLayout | None = None
        self._worker_pid: int | None = None

    # ---- the shard writers' session

    @contextlib.contextmanager
    def shard_writes(self) -> Iterator[None]:
        """Be the shards' only writer for the block (see ``_shard_writes``)."""
        with self._shard_writes:
            yield

    # ---- resync

    def reset(self, layout: MapLayout, worker_pid: int | None, entries: int) -> None:
        """After a resync committed the shards and cleared the overlay map of ``worker_pid``
        (the caller holds :meth:`shard_writes`)."""
        with self._lock:
            self._held.clear()
            self._pending.clear()
            self._drained.clear()
            self._entries = entries
            self._layout, self._worker_pid = layout, worker_pid

    # ---- the follower: changes into the overlay

    def room_for(self, count: int) -> bool:
        """Whether ``count`` more keys fit under OVERLAY_LIMIT."""
        with self._lock:
            return len(self._held) + count <= OVERLAY_LIMIT

    def held_among(self, keys: Iterable[str]) -> set[str]:
        """Which of these keys the overlay map holds (``set`` for them, ``add`` for others)."""
        with self._lock:
            return {k for k in keys if k in self._held}

    def put(self, values: Mapping[str, str | None]) -> None:
        """The follower put these key → value (None: the tombstone) into the overlay map:
        each key is pending (again, as the newest change) and no longer drained."""
        with self._lock:
            for key, value in values.items():
                self._held[key] = overlay_value(value)
                self._pending.pop(key, None)
                self._pending[key] = value
                self._drained.pop(key, None)

    def shards_took(self, keys: Collection[str]) -> list[str]:
        """A batch went straight into the shards (the caller holds :meth:`shard_writes`):
        nothing about these keys is pending any more. Returns those the overlay map holds,
        which now show an older value: the caller deletes them, then calls :meth:`forget`."""
        with self._lock:
            for key in keys:
                self._pending.pop(key, None)
                self._drained.pop(key, None)
            return [k for k in keys if k in self._held]

    def retirable(self, limit: int) -> list[str]:
        """Up to ``limit`` drained keys whose overlay entry equals what their shard now holds:
        deleting them from the overlay map changes nothing a request sees."""
        with self._lock:
            out: list[str] = []
            for key, value in self._drained.items():
                if self._held.get(key) == overlay_value(value):
                    out.append(key)
                    if len(out) >= limit:
                        break
            return out

    def forget(self, keys: Iterable[str]) -> None:
        """The follower deleted these keys from the overlay map."""
        with self._lock:
            for key in keys:
                self._held.pop(key, None)
                self._drained.pop(key, None)

    def add_entries(self, delta: int) -> int | None:
        """The shards gained (or lost) ``delta`` entries; returns the new count."""
        with self._lock:
            if self._entries is not None:
                self._entries += delta
            return self._entries

    # ---- the drainer: shards up to the overlay

    def next_step(self) -> DrainStep | None:
        """The oldest pending key (the caller holds :meth:`shard_writes`), or None."""
        steps = self.next_steps(1)
        return steps[0] if steps else None

    def next_steps(self, limit: int) -> list[DrainStep]:
        """Up to ``limit`` of the oldest pending keys (the caller holds
        :meth:`shard_writes`), oldest first."""
        with self._lock:
            layout, pid = self._layout, self._worker_pid
            if not self._pending or layout is None or pid is None or layout.overlay is None:
                return []
            out: list[DrainStep] = []
            for key, value in self._pending.items():
                out.append(DrainStep(key, value, key in self._held, layout, pid))
                if len(out) >= limit:
                    break
            return out

    @property
    def entries_per_shard(self) -> float | None:
        """The shards' mean entry count (what one shard walk costs), None before a resync."""
        with self._lock:
            if self._entries is None or self._layout is None:
                return None
            return self._entries / self._layout.shards

    def drained(self, step: DrainStep, entries_delta: int) -> None:
        """The shard of ``step.key`` now holds ``step.value``. The key stays pending if a
        newer value was put meanwhile; it may be retired if the overlay shows this value."""
        with self._lock:
            if self._layout != step.layout or self._worker_pid != step.worker_pid:
                # A resync reset the bookkeeping after the step was taken: its report is
                # about a state that no longer exists. (A step holds shard_writes, which a
                # resync takes too, so this is a guard, not a path.)
                return
            if step.key in self._pending and self._pending[step.key] == step.value:
                del self._pending[step.key]
            if self._held.get(step.key) == overlay_value(step.value):
                self._drained[step.key] = step.value
            if self._entries is not None:
                self._entries += entries_delta

    # ---- views (any thread)

    @property
    def entries(self) -> int | None:
        with self._lock:
            return self._entries

    @property
    def held_count(self) -> int:
        with self._lock:
            return len(self._held)

    @property
    def pending_count(self) -> int:
        """Keys whose hand-over to the shards is not finished: not drained yet, or drained
        and still in the overlay map (``pending_shard_updates`` in the status)."""
        with self._lock:
            return len(self._pending) + len(self._drained)

    @property
    def retirable_count(self) -> int:
        """Drained keys still in the overlay map (an upper bound of :meth:`retirable`)."""
        with self._lock:
            return len(self._drained)

    @property
    def to_drain(self) -> int:
        """Keys the drainer has yet to write into their shards."""
        with self._lock:
            return len(self._pending)

    def pending_keys(self) -> list[str]:
        """The pending keys, oldest first (a copy)."""
        with self._lock:
            return list(self._pending)
