"""Races between the sync engine's threads, against a real HAProxy and a real SQLite store.

Each test pins down a schedule that lost something before the engine was split into rooms
(the scheduling hooks wrap real calls; nothing HAProxy or the store does is simulated)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from scimgate.haproxy.connection import CliConnection, Request
from scimgate.sync import ResyncReason, follower as follower_mod
from tests.fixtures.haproxy import RunningHAProxy
from tests.integration.test_sync_engine import (
    audit_events,
    converge,
    http_status,
    key,
    put,
    running_engine,
    sqlite_db,  # noqa: F401 (a fixture)
    start_haproxy,  # noqa: F401 (a fixture)
    target,
    wait_until,
)

pytestmark = pytest.mark.haproxy


def test_a_manual_resync_asked_for_during_a_resync_is_not_lost(
    sqlite_db: Any,  # noqa: F811
    start_haproxy: Callable[[], RunningHAProxy],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, ``engine.resync()`` set the follower's reason from another thread and the
    follower reset it when its running resync finished: the request was dropped."""
    proc = start_haproxy()
    with running_engine(sqlite_db, [target(proc, "t1")]) as engine:
        converge(sqlite_db, engine, put(sqlite_db, {key(i): ",eng," for i in range(50)}))
        in_resync, release = threading.Event(), threading.Event()
        real = follower_mod.full_resync

        def held_resync(*args: Any, **kw: Any) -> Any:
            result = real(*args, **kw)
            if args[4] is ResyncReason.DRIFT:  # the first one: hold it until asked again
                in_resync.set()
                release.wait(10)
            return result

        monkeypatch.setattr(follower_mod, "full_resync", held_resync)
        engine.resync("t1", ResyncReason.DRIFT)
        assert in_resync.wait(10)
        engine.resync("t1")  # an operator, while the drift resync is finishing
        release.set()
        wait_until(lambda: [e["reason"] for e in audit_events(sqlite_db, "sync.resync")][-2:]
                   == ["drift", "manual"])  # fmt: skip
        wait_until(lambda: engine.ready()[0])


def test_a_deprovision_is_confirmed_while_the_drainer_waits_on_haproxy(
    sqlite_db: Any,  # noqa: F811
    start_haproxy: Callable[[], RunningHAProxy],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, a drain step sent its overlay ``del`` holding the lock the follower's fast
    path takes: while HAProxy was slow to answer the drainer (up to the client's 10 s
    timeout), deprovisions waited too. Now the follower waits for no drain step."""
    proc = start_haproxy()
    stall = 3.0  # seconds each of the drainer's exchanges takes, from now on
    slow = threading.Event()
    real = CliConnection.exchange

    def slow_for_the_drainer(self: CliConnection, requests: Sequence[Request]) -> list[str]:
        if slow.is_set() and threading.current_thread().name.startswith("sync-drain-"):
            time.sleep(stall)
        return real(self, requests)

    monkeypatch.setattr(CliConnection, "exchange", slow_for_the_drainer)
    with running_engine(sqlite_db, [target(proc, "t1")]) as engine:
        converge(sqlite_db, engine, put(sqlite_db, {key(i): ",eng," for i in range(60)}))
        wait_until(lambda: not engine.followers[0].overlay.pending_count)
        slow.set()
        # Grants in the overlay keep the drainer busy (and slow) for the rest of the test.
        converge(sqlite_db, engine, put(sqlite_db, {key(i): ",ops," for i in range(100, 160)}))
        # A drain step is three slow exchanges (shard del, shard add, and before: the
        # overlay del): deprovisions every ~0.45 s over ~8.5 s land in each of them. The
        # bound is half a stall: a loaded machine's scheduling delays stay well below it.
        for i in range(0, 38, 2):
            changes = put(sqlite_db, {key(i): None})
            started = time.monotonic()
            converge(sqlite_db, engine, changes, timeout=10)
            assert time.monotonic() - started < stall / 2, "a deprovision waited for the drainer"
            assert http_status(proc, key(i)) == 403
            time.sleep(0.45)
        assert engine.followers[0].overlay.to_drain > 0  # the drainer was still at work
        slow.clear()  # let the drainer stop quickly
