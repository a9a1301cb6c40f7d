"""Why a target gets a full resync, and the requests for one.

A resync request may come from the follower itself (it cannot be sure what HAProxy holds),
from an operator (``SyncEngine.resync``) or from the engine at start-up. Requests are
messages to the follower, never a flag two threads set and reset: a request made while a
resync runs is kept for the next one.
"""

from __future__ import annotations

import enum
import threading


class ResyncReason(enum.StrEnum):
    """The recorded reason (audit ``sync.resync`` detail, ``scimgate_resyncs_total`` label)."""

    STARTUP = "startup"  # the engine started: what HAProxy holds is unknown
    RECONNECT = "reconnect"  # the Runtime API was unreachable, or the connection was lost
    RESTART = "restart"  # a new HAProxy worker that loaded the map files, not our state
    RELOAD = "reload"  # the master reloaded: new workers loaded the map files
    EXTERNAL_COMMIT = "external_commit"  # someone else committed a map version
    APPLY_ERROR = "apply_error"  # a batch failed part-way: its outcome is unknown
    READBACK = "readback"  # a batch read back other values than were sent
    DRIFT = "drift"  # the periodic drift check found a difference
    BACKLOG = "backlog"  # so far behind that one resync beats replaying the change log
    ERROR = "error"  # a bug in the follower: start again from the store
    MANUAL = "manual"  # an operator asked for one


class ResyncRequests:
    """The reasons for the next resync of one target, in the order they were asked for.

    Any thread may :meth:`request`; the follower :meth:`take`\\ s them all when a resync
    starts. The first reason asked for is the one recorded (the others are covered by the same
    resync: it reads the store after they were asked for)."""

    def __init__(self, first: ResyncReason | None = ResyncReason.STARTUP) -> None:
        # _lock: _reasons. A leaf lock (nothing is called while holding it).
        self._lock = threading.Lock()
        self._reasons: dict[ResyncReason, None] = {} if first is None else {first: None}

    def request(self, reason: ResyncReason) -> None:
        with self._lock:
            self._reasons.setdefault(ResyncReason(reason), None)

    def take(self) -> tuple[ResyncReason, ...]:
        """Every reason asked for so far, oldest first (empty if none); none is left pending."""
        with self._lock:
            taken = tuple(self._reasons)
            self._reasons.clear()
            return taken

    def restore(self, taken: tuple[ResyncReason, ...]) -> None:
        """Put back what :meth:`take` returned (the resync failed), ahead of newer requests."""
        with self._lock:
            newer = list(self._reasons)
            self._reasons = dict.fromkeys([*taken, *newer])

    def pending(self) -> ResyncReason | None:
        """The reason the next resync will record, or None when none is asked for."""
        with self._lock:
            return next(iter(self._reasons), None)
