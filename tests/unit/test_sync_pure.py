"""The sync engine's pure parts: coalescing, entry filtering, drift arithmetic, layout choice,
and the overlay bookkeeping's hand-over rules."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from scimgate.haproxy import encode_payload
from scimgate.policy.compiler import OVERLAY_MAP_NAME, OVERLAY_TOMBSTONE
from scimgate.store.outbox import MapChange, is_deprovision
from scimgate.sync.apply import ENTRY_VALIDATOR, DriftCounts, coalesce, diff, valid_entries
from scimgate.sync.layout import LayoutError, MapLayout, choose_shards, resolve_layout
from scimgate.sync.overlay import Overlay, overlay_value
from scimgate.sync.recorder import Recorder
from scimgate.sync.state import TS_FORMAT, age_seconds, entries_of_bodies, parse_ts
from scimgate.sync.status import healthy
from scimgate.sync.waiters import Waiters


def key(i: int | str) -> str:
    return hashlib.sha256(f"user-{i}".encode()).hexdigest().upper()


# --------------------------------------------------------------------------- batches


def test_coalesce_keeps_each_keys_last_change_in_order_of_its_seq() -> None:
    changes = [
        MapChange(1, "A", ",x,", "u", False),
        MapChange(2, "B", ",y,", "u", False),
        MapChange(3, "A", None, "u", True),
        MapChange(4, "C", ",", "u", False),
        MapChange(5, "B", ",z,", "u", False),
    ]
    out = coalesce(changes)
    assert list(out) == ["A", "C", "B"]
    assert [c.seq for c in out.values()] == [3, 4, 5] and out["A"].value is None
    assert coalesce([]) == {}


def test_valid_entries_drops_only_what_may_not_reach_the_wire() -> None:
    good = {key(1): ",eng,", key(2): None, key(3): ","}
    assert valid_entries(good) == (good, [])
    bad = {key(4).lower(): ",eng,", key(5): ",Eng,", key(6): "eng;show info", "": None}
    ok, rejected = valid_entries({**good, **bad})
    assert ok == good and sorted(rejected) == sorted(bad)


def test_diff_counts_missing_extra_and_wrong() -> None:
    desired = {"a": "1", "b": "2", "c": None, "d": "4"}
    actual = {"a": "1", "b": "x", "c": "3", "e": None}
    assert diff(desired, actual) == DriftCounts(missing=1, extra=1, wrong=1)
    total = diff(desired, actual) + DriftCounts(1, 1, 1)
    assert total == DriftCounts(2, 2, 2) and total.total == 6
    assert diff({}, {}).total == 0


def test_deprovision_is_losing_the_entry_or_any_group() -> None:
    assert is_deprovision(",eng,", None)
    assert is_deprovision(",eng,sre,", ",eng,")
    assert not is_deprovision(",eng,", ",eng,sre,")
    assert not is_deprovision(None, ",eng,")
    assert not is_deprovision(",", ",eng,")


# --------------------------------------------------------------------------- layout


def test_choose_shards() -> None:
    assert choose_shards((2, 6, 12)) == 16 and choose_shards((2, 9, 0)) == 1
    assert choose_shards((2, 6, 12), 256) == 256 and choose_shards((3, 0, 0), 16) == 16
    with pytest.raises(ValueError):
        choose_shards((2, 6, 12), 8)


def _paths(d: str, names: list[str]) -> list[str]:
    return [f"{d}/{n}" for n in names]


def test_layout_discovery_follows_what_haproxy_loads() -> None:
    sixteen = [f"identities-{i:x}.map" for i in range(16)]
    loaded = [*_paths("/a", sixteen), *_paths("/b", ["identities.map"]), "/c/other.map"]
    found = MapLayout.discover(loaded)
    assert found == MapLayout("/a", 16) and found is not None and found.overlay is None
    assert MapLayout.discover(loaded, "/b/") == MapLayout("/b", 1)
    assert MapLayout.discover(_paths("/a", sixteen[:15])) is None  # incomplete
    with_overlay = MapLayout.discover([*_paths("/a", sixteen), f"/a/{OVERLAY_MAP_NAME}"])
    assert with_overlay is not None and with_overlay.overlay == f"/a/{OVERLAY_MAP_NAME}"
    layout, warning = resolve_layout(
        _paths("/b", ["identities.map"]), version=(2, 6, 12), configured_shards=0, map_dir=None
    )
    assert layout == MapLayout("/b", 1) and warning is not None and "following" in warning
    assert resolve_layout(loaded, version=(2, 6, 12), configured_shards=0, map_dir="/a")[1] is None
    with pytest.raises(LayoutError):
        resolve_layout(["/c/other.map"], version=(2, 6, 12), configured_shards=0, map_dir=None)


@pytest.mark.parametrize("shards", [1, 16, 256])
def test_split_and_path_of_agree(shards: int) -> None:
    layout = MapLayout("/m", shards)
    entries = {key(i): "," for i in range(600)}
    parts = layout.split(entries)
    assert len(parts) == shards and sum(map(len, parts)) == len(entries)
    paths = layout.paths
    for i, part in enumerate(parts):
        assert all(layout.path_of(k) == paths[i] for k in list(part)[:3])
    with pytest.raises(ValueError):
        MapLayout("/m", 16).split({"not hex": ","})


# --------------------------------------------------------------------------- overlay hand-over

LAYOUT = MapLayout("/m", 16, f"/m/{OVERLAY_MAP_NAME}")


def fresh_overlay() -> Overlay:
    overlay = Overlay()
    overlay.reset(LAYOUT, 7, 100)
    return overlay


def test_a_key_goes_overlay_then_shard_then_leaves_the_overlay() -> None:
    o = fresh_overlay()
    assert o.next_step() is None and o.retirable(10) == []
    o.put({"A": ",eng,", "B": None})
    assert o.held_among(["A", "B", "C"]) == {"A", "B"}
    assert o.held_count == 2 and o.pending_count == 2 and o.to_drain == 2
    step = o.next_step()
    assert step is not None and (step.key, step.value, step.covered) == ("A", ",eng,", True)
    assert (step.layout, step.worker_pid) == (LAYOUT, 7)
    o.drained(step, +1)
    assert o.to_drain == 1 and o.pending_count == 2  # drained, not yet out of the overlay
    assert o.retirable(10) == ["A"] and o.entries == 101
    o.forget(["A"])
    assert o.held_count == 1 and o.pending_count == 1


def test_a_newer_value_put_during_a_drain_step_stays_pending_and_in_the_overlay() -> None:
    o = fresh_overlay()
    o.put({"A": ",eng,"})
    step = o.next_step()
    assert step is not None
    o.put({"A": None})  # the follower, while the drainer writes ",eng," into the shard
    o.drained(step, +1)
    assert o.retirable(10) == []  # the overlay's tombstone must keep hiding the shard
    nxt = o.next_step()
    assert nxt is not None and nxt.value is None


def test_a_drain_reported_before_a_newer_put_is_not_retired() -> None:
    o = fresh_overlay()
    o.put({"A": ",eng,"})
    step = o.next_step()
    assert step is not None
    o.drained(step, 0)
    assert o.retirable(10) == ["A"]
    o.put({"A": ",ops,"})  # before the follower retired it
    assert o.retirable(10) == [] and o.to_drain == 1


def test_a_batch_into_the_shards_takes_its_keys_out_of_the_overlay() -> None:
    o = fresh_overlay()
    o.put({"A": ",eng,", "B": ","})
    held = o.shards_took(["A", "C"])
    assert held == ["A"] and o.to_drain == 1
    o.forget(held)
    assert o.held_among(["A", "B"]) == {"B"}


def test_a_resync_empties_the_bookkeeping_and_room_is_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scimgate.sync import overlay as overlay_mod

    o = fresh_overlay()
    o.put({"A": ",eng,", "B": None})
    monkeypatch.setattr(overlay_mod, "OVERLAY_LIMIT", 3)
    assert o.room_for(1) and not o.room_for(2)
    o.reset(LAYOUT, 8, 5)
    assert (o.held_count, o.pending_count, o.entries) == (0, 0, 5)
    assert o.room_for(3)
    assert Overlay().next_step() is None  # before any resync: nothing to drain into
    assert overlay_value(None) == OVERLAY_TOMBSTONE and overlay_value(",") == ","


# --------------------------------------------------------------------------- waiters, recorder


def test_waiters_release_when_every_target_passed() -> None:
    w = Waiters(["a", "b"])

    async def scenario() -> list[bool]:
        first = asyncio.ensure_future(w.wait(5, 2.0))
        await asyncio.sleep(0)
        w.advanced("a", 9)
        await asyncio.sleep(0.01)
        assert not first.done()
        w.advanced("b", 5)
        late = await w.wait(5, 0.01)  # already satisfied
        never = await w.wait(6, 0.05)  # times out
        return [await first, late, never]

    assert asyncio.run(scenario()) == [True, True, False]
    assert w.low() == 5 and w.cursors() == {"a": 9, "b": 5}
    w.saw_head(12)
    w.saw_head(3)
    assert w.head == 12 and w.lag("b") == 7
    assert w.wait_sync(5, 0.01) and not w.wait_sync(7, 0.01)


def test_closed_waiters_answer_false() -> None:
    w = Waiters(["a"])

    async def scenario() -> tuple[bool, bool]:
        pending = asyncio.ensure_future(w.wait(3, 5.0))
        await asyncio.sleep(0)
        w.close()
        return await pending, await w.wait(4, 5.0)

    assert asyncio.run(scenario()) == (False, False)


def test_the_recorder_records_in_order_and_everything_before_it_stops() -> None:
    done: list[int] = []
    recorder = Recorder()
    recorder.record(lambda: done.append(0))  # not started: in the caller's thread
    recorder.start()
    for i in range(1, 50):
        recorder.record(lambda i=i: done.append(i))
    recorder.stop(5)
    assert done == list(range(50))


# --------------------------------------------------------------------------- state, status


def test_timestamps_and_bodies_round_trip() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    text = now.strftime(TS_FORMAT)
    assert parse_ts(text) == now
    assert age_seconds(text, now + timedelta(seconds=2.5)) == 2.5
    entries = {key(i): (",", ",eng,")[i % 2] for i in range(20)}
    bodies = [encode_payload(part, ENTRY_VALIDATOR) for part in MapLayout("/m", 16).split(entries)]
    assert entries_of_bodies(bodies) == entries


def test_healthy_means_reachable_and_nothing_waiting_too_long() -> None:
    assert healthy({"reachable": True, "behind_seconds": 1.0}, 10)
    assert not healthy({"reachable": True, "behind_seconds": 11.0}, 10)
    assert not healthy({"reachable": False, "behind_seconds": 0.0}, 10)
    assert not healthy({"reachable": None, "behind_seconds": 0.0}, 10)
