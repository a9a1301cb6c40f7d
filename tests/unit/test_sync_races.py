"""The sync engine's shared state under a seeded thread schedule (tests/unit/interleave.py).

Each race found by reading the engine before it was split into rooms has a test here. Each
test runs the same schedule twice: against the shape the code had before (written out here,
so the schedule is shown to expose the race) and against the owner class that replaced it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from scimgate.sync import mapfiles as mapfiles_mod
from scimgate.sync.layout import MapLayout
from scimgate.sync.mapfiles import MapFileWriter
from scimgate.sync.overlay import DrainStep, Overlay
from scimgate.sync.reasons import ResyncReason, ResyncRequests
from scimgate.sync.state import Snapshot
from scimgate.sync.waiters import Waiters
from tests.unit.interleave import run_together, yielding_inside

TRIALS = 200


# --------------------------------------------------------------------------- the head seq


class HeadBefore:
    """``SyncEngine._saw_head`` before: a check-then-set from API, follower and housekeeping
    threads, with no lock."""

    def __init__(self) -> None:
        self._head = 0

    def saw_head(self, seq: int) -> None:
        if seq > self._head:
            self._head = seq

    @property
    def head(self) -> int:
        return self._head


def head_regressions(make: type[HeadBefore] | type[Waiters]) -> int:
    """Trials in which two threads report heads 10 and 20 and the head ends below 20."""
    lost = 0
    with yielding_inside(make.saw_head, seed=1):
        for _ in range(TRIALS):
            owner = make() if make is HeadBefore else Waiters(["t"])
            run_together(lambda o=owner: o.saw_head(10), lambda o=owner: o.saw_head(20))
            lost += owner.head != 20
    return lost


def test_the_head_never_moves_back() -> None:
    assert head_regressions(HeadBefore) > 0, "the schedule must expose the unlocked shape"
    assert head_regressions(Waiters) == 0


# --------------------------------------------------------------------------- entry counts


class EntriesBefore:
    """The shards' entry count before: ``entries +=`` in the follower (outside the state
    lock) and in the drainer (inside it)."""

    def __init__(self) -> None:
        self.entries: int | None = 0
        self.state_lock = threading.Lock()

    def follower_adds(self, delta: int) -> None:
        if self.entries is not None:
            self.entries += delta

    def drainer_adds(self, delta: int) -> None:
        with self.state_lock:
            if self.entries is not None:
                self.entries += delta


LAYOUT = MapLayout("/maps", 16, "/maps/identities-recent.map")


def _key(i: int) -> str:
    return f"{i:064X}"


def test_entry_counts_are_never_lost() -> None:
    adds = 150

    before = EntriesBefore()
    with yielding_inside(EntriesBefore.follower_adds, EntriesBefore.drainer_adds, seed=2):
        run_together(
            lambda: [before.follower_adds(1) for _ in range(adds)],
            lambda: [before.drainer_adds(1) for _ in range(adds)],
        )
    assert before.entries != 2 * adds, "the schedule must expose the unlocked shape"

    overlay = Overlay()
    overlay.reset(LAYOUT, 7, 0)
    overlay.put({_key(i): ",eng," for i in range(adds)})
    steps = [DrainStep(_key(i), ",eng,", True, LAYOUT, 7) for i in range(adds)]
    with yielding_inside(Overlay.add_entries, Overlay.drained, seed=2):
        run_together(
            lambda: [overlay.add_entries(1) for _ in range(adds)],
            lambda: [overlay.drained(step, 1) for step in steps],
        )
    assert overlay.entries == 2 * adds


# --------------------------------------------------------------------------- resync requests


class ReasonBefore:
    """``resync_reason`` before: set by ``SyncEngine.resync`` from any thread, reset by the
    follower once its resync is done."""

    def __init__(self) -> None:
        self.resync_reason: str | None = "startup"

    def resync(self, reason: str) -> None:  # another thread
        self.resync_reason = reason

    def follower_resyncs(self, during: threading.Event, done: threading.Event) -> None:
        _reason = self.resync_reason
        during.set()
        done.wait(5)  # the resync runs; meanwhile an operator asks for another
        self.resync_reason = None


def test_a_resync_asked_for_during_a_resync_is_kept() -> None:
    before = ReasonBefore()
    during, done = threading.Event(), threading.Event()
    t = threading.Thread(target=before.follower_resyncs, args=(during, done))
    t.start()
    during.wait(5)
    before.resync("manual")
    done.set()
    t.join(5)
    assert before.resync_reason is None, "the manual request is lost in the shape before"

    requests = ResyncRequests(ResyncReason.STARTUP)
    assert requests.take() == (ResyncReason.STARTUP,)  # the follower starts a resync
    requests.request(ResyncReason.MANUAL)  # an operator, while it runs
    assert requests.pending() is ResyncReason.MANUAL  # the next turn resyncs again
    assert requests.take() == (ResyncReason.MANUAL,)
    assert requests.pending() is None


def test_resync_requests_from_many_threads_are_each_served() -> None:
    requests = ResyncRequests(None)
    served: list[ResyncReason] = []

    def follower() -> None:
        deadline = time.monotonic() + 5
        while len(set(served)) < 3 and time.monotonic() < deadline:
            served.extend(requests.take())

    with yielding_inside(ResyncRequests.request, ResyncRequests.take, seed=3):
        run_together(
            follower,
            lambda: requests.request(ResyncReason.MANUAL),
            lambda: requests.request(ResyncReason.DRIFT),
            lambda: requests.request(ResyncReason.RELOAD),
        )
    assert set(served) == {ResyncReason.MANUAL, ResyncReason.DRIFT, ResyncReason.RELOAD}


def test_a_failed_resync_keeps_its_reasons_first() -> None:
    requests = ResyncRequests(ResyncReason.RECONNECT)
    taken = requests.take()
    requests.request(ResyncReason.MANUAL)
    requests.restore(taken)  # the resync raised
    assert requests.take() == (ResyncReason.RECONNECT, ResyncReason.MANUAL)


# --------------------------------------------------------------------------- the writer's layout


def test_a_layout_change_waits_for_a_write_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the engine swapped ``writer.layout`` under its own lock, not the writer's: a
    write in progress could see the layout change under it. ``adopt`` takes the writer's
    locks, so it waits for the write and every write sees one layout."""
    plain = MapLayout(str(tmp_path), 1)
    writer = MapFileWriter(plain)
    writing, release = threading.Event(), threading.Event()
    real = mapfiles_mod.write_map_files
    seen: list[str | None] = []

    def slow_write(files: list[tuple[str, bytes]], *args: object, **kw: object) -> int:
        seen.append(writer.layout.overlay)
        writing.set()
        release.wait(5)
        seen.append(writer.layout.overlay)
        return real(files, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(mapfiles_mod, "write_map_files", slow_write)
    write = threading.Thread(target=writer.write, args=(Snapshot(1, {_key(1): ",eng,"}),))
    write.start()
    assert writing.wait(5)
    adopt = threading.Thread(target=writer.adopt, args=(plain.with_overlay(),))
    adopt.start()
    adopt.join(0.3)
    assert adopt.is_alive(), "the layout must not change while a write is in progress"
    release.set()
    write.join(5)
    adopt.join(5)
    assert seen[:2] == [None, None]  # one layout for the whole write
    assert writer.layout.overlay == plain.with_overlay().overlay
