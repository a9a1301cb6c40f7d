"""The sync engine against real HAProxy processes and real SQLite / PostgreSQL stores.

Each HAProxy loads 16 identities map shards (what 2.6 gets by default) and denies any
request whose ``x-key`` header is not in its shard's map.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scimgate.config import Settings, TargetConfig
from scimgate.haproxy import RuntimeClient
from scimgate.metrics import Metrics
from scimgate.policy.compiler import OVERLAY_MAP_NAME, OVERLAY_TOMBSTONE, map_file_names
from scimgate.store import migrate, tables
from scimgate.store.db import Database, now_iso
from scimgate.store.outbox import MapChange, desired_entries
from scimgate.sync import SyncEngine, choose_shards, overlay as overlay_mod, status_from_db
from scimgate.sync.drainer import Drainer
from scimgate.sync.layout import MapLayout
from tests.fixtures.haproxy import RUNTIME_GLOBAL, RunningHAProxy
from tests.support.versions import HAProxyBinary

pytestmark = pytest.mark.haproxy

SHARDS = 16
LAYOUT_NAMES = map_file_names(SHARDS)


def layout_files(overlay: bool = True) -> dict[str, str]:
    """Empty map files of the test layout (HAProxy refuses to start on a missing one)."""
    return {n: "" for n in [*LAYOUT_NAMES, *([OVERLAY_MAP_NAME] if overlay else [])]}


def haproxy_config(overlay: bool = True) -> str:
    """As rendered configs do: the overlay first, its shard only where it has no entry."""
    guard = " !{ var(txn.groups) -m found }" if overlay else ""
    rules = [
        f"    http-request set-var(txn.groups) req.fhdr(x-key),map($dir/{name}) "
        f"if {{ req.fhdr(x-key) -m beg {shard:X} }}{guard}"
        for shard, name in enumerate(LAYOUT_NAMES)
    ]
    if overlay:
        rules.insert(
            0, f"    http-request set-var(txn.groups) req.fhdr(x-key),map($dir/{OVERLAY_MAP_NAME})"
        )
    return (
        RUNTIME_GLOBAL
        + "\nfrontend fe\n    bind 127.0.0.1:$port0\n"
        + "\n".join(rules)
        + "\n    http-request deny deny_status 403 unless { var(txn.groups) -m beg , }\n"
        + "    http-request return status 200 content-type text/plain string ok\n"
    )


def key(i: int | str) -> str:
    return hashlib.sha256(f"user-{i}".encode()).hexdigest().upper()


@pytest.fixture
def start_haproxy(
    haproxy_factory: Callable[..., RunningHAProxy],
) -> Callable[[], RunningHAProxy]:
    def start(overlay: bool = True) -> RunningHAProxy:
        return haproxy_factory(haproxy_config(overlay), files=layout_files(overlay))

    return start


@pytest.fixture
def start_versioned(
    haproxy_factory: Callable[..., RunningHAProxy], haproxy_version: HAProxyBinary
) -> Callable[[], RunningHAProxy]:
    """As ``start_haproxy``, on each HAProxy version in turn (the fault tests: restart,
    reload, drift; the layout stays the hand-written 16 shards + overlay on both)."""

    def start(overlay: bool = True) -> RunningHAProxy:
        return haproxy_factory(
            haproxy_config(overlay), files=layout_files(overlay), binary=haproxy_version.path
        )

    return start


def target(proc: RunningHAProxy, name: str, *, map_dir: bool = True) -> TargetConfig:
    return TargetConfig(
        name=name,
        runtime_api=f"unix:{proc.workdir / 'admin.sock'}",
        master_api=f"unix:{proc.master_socket}",
        map_dir=str(proc.workdir) if map_dir else None,
    )


def make_db(url: str) -> Database:
    db = Database(url)
    migrate.upgrade(db)
    return db


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    db = make_db(f"sqlite:///{tmp_path / 'scimgate.db'}")
    yield db
    db.dispose()


@contextlib.contextmanager
def running_engine(db: Database, targets: list[TargetConfig], **kw: Any) -> Iterator[SyncEngine]:
    settings = Settings(
        base_dir=Path("/nonexistent"),
        database_url=db.url,
        targets=targets,
        drift_check_interval=kw.pop("drift_check_interval", 3600.0),
        deprovision_alert_seconds=kw.pop("deprovision_alert_seconds", 10.0),
        **kw,
    )
    engine = SyncEngine.from_settings(settings, db, Metrics())
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
        assert not any(f.thread.is_alive() for f in engine.followers)


def put(db: Database, entries: dict[str, str | None]) -> list[MapChange]:
    """Write desired entries and their change-log rows the way store/outbox.py does."""
    E, C = tables.map_entries, tables.change_log
    out: list[MapChange] = []
    with db.write() as conn:
        created = now_iso()
        for k, v in entries.items():
            old = conn.execute(sa.select(E.c.value).where(E.c.identity_key == k)).scalar()
            conn.execute(E.delete().where(E.c.identity_key == k))
            if v is not None:
                conn.execute(E.insert().values(identity_key=k, value=v, user_id="u"))
            deprov = old is not None and v is None
            seq = conn.execute(
                C.insert().values(
                    identity_key=k, value=v, user_id="u", deprovision=deprov, created=created
                )
            ).inserted_primary_key[0]
            out.append(MapChange(int(seq), k, v, "u", deprov))
    return out


def shard_state(proc: RunningHAProxy) -> dict[str, str]:
    """What the shards hold."""
    with proc.client() as client:
        out: dict[str, str] = {}
        for name in LAYOUT_NAMES:
            out.update(client.show_map(str(proc.workdir / name)))
        return out


def overlay_state(proc: RunningHAProxy) -> dict[str, str]:
    with proc.client() as client:
        if not (proc.workdir / OVERLAY_MAP_NAME).exists():
            return {}
        return client.show_map(str(proc.workdir / OVERLAY_MAP_NAME))


def live_state(proc: RunningHAProxy) -> dict[str, str]:
    """What a request sees: the overlay (tombstone: absent), else the shards. Read in a
    request's order (overlay first): an entry gone from the overlay since is in its shard."""
    overlay = overlay_state(proc)
    out = shard_state(proc)
    for k, v in overlay.items():
        if v == OVERLAY_TOMBSTONE:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def desired(db: Database) -> dict[str, str]:
    with db.read() as conn:
        return desired_entries(conn)


def http_status(proc: RunningHAProxy, k: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)
    try:
        conn.request("GET", "/", headers={"x-key": k})
        return conn.getresponse().status
    finally:
        conn.close()


def audit_events(db: Database, kind: str) -> list[dict[str, Any]]:
    t = tables.audit_events
    with db.read() as conn:
        rows = conn.execute(sa.select(t.c.detail).where(t.c.kind == kind).order_by(t.c.seq))
        return [dict(r[0]) for r in rows]


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def converge(db: Database, engine: SyncEngine, changes: list[MapChange], timeout: float = 15):
    engine.notify(changes)
    assert engine.wait_confirmed_sync(changes[-1].seq, timeout)


# --------------------------------------------------------------------------- tests


def test_choose_shards_by_version() -> None:
    assert choose_shards((2, 6, 12)) == 16
    assert choose_shards((2, 8, 0)) == 16
    assert choose_shards((2, 9, 0)) == 1
    assert choose_shards((3, 1, 2)) == 1
    assert choose_shards((2, 6, 12), 256) == 256
    with pytest.raises(ValueError):
        choose_shards((2, 6, 12), 3)
    paths = [f"/m/{n}" for n in map_file_names(16)] + ["/other/x.map"]
    assert MapLayout.discover(paths) == MapLayout("/m", 16)
    assert MapLayout.discover(paths[:5]) is None


def _convergence(db: Database, proc: RunningHAProxy) -> None:
    # State that exists before the engine starts arrives by the start-up resync.
    put(db, {key(i): ",eng," for i in range(300)})
    with running_engine(db, [target(proc, "t1")]) as engine:
        wait_until(lambda: engine.followers[0].reachable)
        assert live_state(proc) == desired(db)
        # Then incremental changes: updates, adds, deletes, several changes of one key.
        changes = put(db, {key(i): ",eng,sre," for i in range(0, 300, 3)})
        changes += put(db, {key(i): None for i in range(1, 300, 7)})
        changes += put(db, {key(f"new{i}"): "," for i in range(50)})
        changes += put(db, {key("new1"): ",ops,"})
        converge(db, engine, changes)
        assert live_state(proc) == desired(db)  # at confirmation (through the overlay)
        # The shards follow behind the overlay, which empties as they do.
        wait_until(lambda: engine.status()[0]["pending_shard_updates"] == 0)
        assert shard_state(proc) == desired(db) and overlay_state(proc) == {}
        status = engine.status()[0]
        assert status["reachable"] and status["lag"] == 0 and status["healthy"]
        assert status["entries"] == len(desired(db))
        # The durable record follows the confirmation (waiters are released first).
        wait_until(lambda: audit_events(db, "sync.applied")[-1]["last_seq"] == changes[-1].seq)
        assert audit_events(db, "sync.resync")[0]["reason"] == "startup"
    # The store alone tells the same story (what `scimgate status` shows from elsewhere).
    settings = Settings(base_dir=Path("/x"), database_url=db.url, targets=[target(proc, "t1")])
    from_db = status_from_db(db, settings)[0]
    assert from_db["cursor"] == changes[-1].seq and from_db["lag"] == 0


def test_convergence_sqlite(sqlite_db: Database, start_haproxy: Callable[[], RunningHAProxy]):
    _convergence(sqlite_db, start_haproxy())


@pytest.mark.postgres
def test_convergence_postgres(pg_db_url: str, start_haproxy: Callable[[], RunningHAProxy]):
    db = make_db(pg_db_url)
    try:
        _convergence(db, start_haproxy())
    finally:
        db.dispose()


def test_deprovision_denies_next_request(
    sqlite_db: Database, start_haproxy: Callable[[], RunningHAProxy]
) -> None:
    proc = start_haproxy()
    alice, bob = key("alice"), key("bob")
    with running_engine(sqlite_db, [target(proc, "t1")]) as engine:
        converge(sqlite_db, engine, put(sqlite_db, {alice: ",eng,", bob: ","}))
        assert http_status(proc, alice) == 200
        changes = put(sqlite_db, {alice: None})
        assert changes[0].deprovision
        converge(sqlite_db, engine, changes)
        assert http_status(proc, alice) == 403
        assert http_status(proc, bob) == 200

        def confirmations() -> list[tuple[int, str]]:
            with sqlite_db.read() as conn:
                return [(r.seq, r.target) for r in conn.execute(sa.select(tables.confirmations))]

        wait_until(lambda: confirmations() == [(changes[0].seq, "t1")])
        assert engine.status()[0]["unconfirmed_deprovisions"] == 0


def test_two_targets_and_one_down_during_1000_changes(
    sqlite_db: Database,
    start_haproxy: Callable[[], RunningHAProxy],
    caplog: pytest.LogCaptureFixture,
) -> None:
    p1, p2 = start_haproxy(), start_haproxy()
    put(sqlite_db, {key(i): ",eng," for i in range(200)})
    targets = [target(p1, "a"), target(p2, "b")]
    with running_engine(sqlite_db, targets, deprovision_alert_seconds=0.5) as engine:
        wait_until(lambda: all(f.reachable for f in engine.followers))
        assert live_state(p1) == live_state(p2) == desired(sqlite_db)

        p2.stop()
        wait_until(lambda: not engine.followers[1].reachable)
        changes: list[MapChange] = []
        for i in range(0, 1000, 50):  # 1,000 changes in 20 commits
            batch = {key(j): (None if j % 5 == 0 else f",g{j % 7},") for j in range(i, i + 50)}
            changes += put(sqlite_db, batch)
            engine.notify(changes[-50:])
        a = engine.followers[0]
        wait_until(lambda: a.cursor == changes[-1].seq)  # "a" is not held back by "b"
        assert live_state(p1) == desired(sqlite_db)
        assert engine.followers[1].cursor < changes[-1].seq
        ok, detail = engine.ready()
        assert not ok and detail["b"]["reachable"] is False and detail["a"]["ok"]
        # read-your-writes gives up (bounded) while a target is down
        assert asyncio.run(engine.wait_confirmed(changes[-1].seq, 0.3)) is False
        # deprovisions (deletes of the first 200 keys) that "b" has not confirmed: alerted
        wait_until(lambda: engine.metrics.unconfirmed._value.get() > 0)
        alerts = [r for r in caplog.records if "deprovision not confirmed" in r.getMessage()]
        assert alerts and all(r.levelname == "ERROR" for r in alerts)
        assert any("b" in getattr(r, "targets", []) for r in alerts)

        # every overdue deprovision is told exactly once: at most ALERT_LINES lines each per
        # pass, the rest in one summary line per pass
        with sqlite_db.read() as conn:
            overdue = conn.execute(
                sa.select(sa.func.count()).where(
                    tables.change_log.c.seq >= changes[0].seq,
                    tables.change_log.c.deprovision.is_(True),
                )
            ).scalar_one()
        assert overdue > 10  # enough to need a summary line

        def told() -> int:
            recs = caplog.records
            each = [
                r.seq for r in recs if r.getMessage() == "sync: deprovision not confirmed in time"
            ]
            more = [
                r for r in recs if r.getMessage() == "sync: more deprovisions not confirmed in time"
            ]
            assert len(each) == len(set(each))
            return len(each) + sum(r.count for r in more)

        wait_until(lambda: told() == overdue)
        summaries = [
            r
            for r in caplog.records
            if r.getMessage() == "sync: more deprovisions not confirmed in time"
        ]
        assert summaries and all(r.levelname == "ERROR" and "b" in r.targets for r in summaries)
        b_status = next(r for r in engine.status() if r["target"] == "b")
        assert b_status["newest_unconfirmed_deprovision"] is not None
        assert not b_status["healthy"] and b_status["reachable"] is False

        p2.start()
        assert engine.wait_confirmed_sync(changes[-1].seq, 15)
        assert live_state(p1) == live_state(p2) == desired(sqlite_db)
        reasons = [
            e["reason"] for e in audit_events(sqlite_db, "sync.resync") if e["target"] == "b"
        ]
        assert reasons[0] == "startup" and reasons[-1] == "reconnect"
        wait_until(lambda: engine.ready()[0])
        wait_until(lambda: engine.metrics.unconfirmed._value.get() == 0)


def test_wait_confirmed_async(
    sqlite_db: Database, start_haproxy: Callable[[], RunningHAProxy]
) -> None:
    proc = start_haproxy()
    with running_engine(sqlite_db, [target(proc, "t1")]) as engine:
        wait_until(lambda: engine.followers[0].reachable)

        async def scenario() -> tuple[bool, float]:
            changes = put(sqlite_db, {key("x"): ",a,"})
            t0 = time.monotonic()
            engine.notify(changes)
            ok = await engine.wait_confirmed(changes[-1].seq, 5)
            return ok, time.monotonic() - t0

        ok, took = asyncio.run(scenario())
        assert ok and took < 1.0
        assert asyncio.run(engine.wait_confirmed(10**9, 0.2)) is False


def _sigkill(proc: RunningHAProxy) -> None:
    procs = proc.master_procs()
    assert proc._popen is not None
    for pid in [proc._popen.pid, *procs.worker_pids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc._popen.wait(5)
    proc._popen = None


def test_sigkill_and_restart_restores_state(
    sqlite_db: Database, start_versioned: Callable[[], RunningHAProxy]
) -> None:
    proc = start_versioned()
    # No map_dir: the restarted HAProxy loads the empty files, so only the resync restores.
    with running_engine(sqlite_db, [target(proc, "t1", map_dir=False)]) as engine:
        converge(sqlite_db, engine, put(sqlite_db, {key(i): ",eng," for i in range(500)}))
        assert len(live_state(proc)) == 500
        _sigkill(proc)
        proc.start()
        wait_until(lambda: live_state(proc) == desired(sqlite_db))
        assert http_status(proc, key(7)) == 200
        # The resync's audit event is written after its commit reached HAProxy, so the live
        # state can match a moment before the event exists: wait for it rather than race it.
        wait_until(
            lambda: (
                [e["reason"] for e in audit_events(sqlite_db, "sync.resync")][-1]
                in ("restart", "reconnect")
            )
        )


def test_reload_through_master_cli(
    sqlite_db: Database, start_versioned: Callable[[], RunningHAProxy]
) -> None:
    proc = start_versioned()
    with running_engine(sqlite_db, [target(proc, "t1")]) as engine:
        converge(sqlite_db, engine, put(sqlite_db, {key(i): ",eng," for i in range(300)}))
        # The map files follow (debounced): a reload loads near-current state.
        writer = engine.map_files.writer_of(str(proc.workdir))
        assert writer is not None
        # (shard files, or shard files + the overlay file written after them)
        wait_until(lambda: max(writer.written_seq, writer.overlay_seq) >= engine.waiters.head)
        before = proc.master_procs().worker_pids
        procs = proc.reload()
        assert procs.worker_pids != before
        wait_until(
            lambda: "reload" in [e["reason"] for e in audit_events(sqlite_db, "sync.resync")]
        )
        converge(sqlite_db, engine, put(sqlite_db, {key(1): None, key("late"): ",x,"}))
        with RuntimeClient(proc.stats_address, 5.0) as fresh:
            assert int(fresh.show_info()["Pid"]) in procs.worker_pids
        assert live_state(proc) == desired(sqlite_db)
        assert http_status(proc, key(1)) == 403
        assert http_status(proc, key("late")) == 200


def test_drift_is_detected_audited_and_repaired(
    sqlite_db: Database, start_versioned: Callable[[], RunningHAProxy]
) -> None:
    proc = start_versioned()
    with running_engine(sqlite_db, [target(proc, "t1")], drift_check_interval=0.3) as engine:
        converge(sqlite_db, engine, put(sqlite_db, {key(i): ",eng," for i in range(100)}))
        wait_until(lambda: not engine.followers[0].overlay.pending_count)  # the shards hold it all
        victim = key(5)
        layout = engine.followers[0].layout
        assert layout is not None
        with proc.client() as behind_our_back:
            assert behind_our_back.del_map(layout.path_of(victim), victim)
        assert http_status(proc, victim) == 403
        wait_until(lambda: bool(audit_events(sqlite_db, "sync.drift")))
        drift = audit_events(sqlite_db, "sync.drift")[0]
        assert drift["target"] == "t1" and drift["missing"] == 1 and drift["extra"] == 0
        wait_until(lambda: live_state(proc) == desired(sqlite_db))
        assert http_status(proc, victim) == 200
        wait_until(lambda: "drift" in [e["reason"] for e in audit_events(sqlite_db, "sync.resync")])
        with sqlite_db.read() as conn:
            row = conn.execute(sa.select(tables.targets)).one()
        assert row.last_drift_check is not None


def _settled_then_held(
    db: Database, engine: SyncEngine, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    """``n`` identities applied and drained into the shards; from then on the shards are
    held back (the drainer finds nothing to do), to look at the overlay."""
    converge(db, engine, put(db, {key(i): ",eng," for i in range(n)}))
    wait_until(lambda: not engine.followers[0].overlay.pending_count)
    monkeypatch.setattr(Drainer, "step", lambda self: False)


def test_changes_go_through_the_overlay_then_the_shards(
    sqlite_db: Database,
    start_haproxy: Callable[[], RunningHAProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = start_haproxy()
    with running_engine(sqlite_db, [target(proc, "t1")]) as engine:
        _settled_then_held(sqlite_db, engine, monkeypatch, 200)
        changes = put(sqlite_db, {key(1): None, key(2): ",ops,", key("n"): ","})
        converge(sqlite_db, engine, changes)
        # Confirmed: in the overlay (tombstone for the deprovision), not yet in the shards.
        assert overlay_state(proc) == {key(1): OVERLAY_TOMBSTONE, key(2): ",ops,", key("n"): ","}
        assert shard_state(proc)[key(1)] == ",eng," and key("n") not in shard_state(proc)
        assert http_status(proc, key(1)) == 403
        assert http_status(proc, key("n")) == 200
        assert live_state(proc) == desired(sqlite_db)
        # The files a reload would load deny it already (the overlay file on top of shard
        # files that may lag by the debounce).
        assert key(1) not in _file_state(proc)
        # A key changed again while in the overlay is updated there (set, no duplicate).
        converge(sqlite_db, engine, put(sqlite_db, {key(1): ",eng,"}))
        assert overlay_state(proc)[key(1)] == ",eng," and http_status(proc, key(1)) == 200
        status = engine.status()[0]
        assert status["overlay_entries"] == 3 and status["pending_shard_updates"] == 3
        # Grants reach the files too, debounced.
        wait_until(lambda: _file_state(proc) == desired(sqlite_db))
        # Drain: the shards catch up and the overlay empties.
        monkeypatch.undo()
        engine.followers[0].drainer.wake.set()
        wait_until(lambda: overlay_state(proc) == {})
        assert shard_state(proc) == desired(sqlite_db) == live_state(proc)
        assert engine.status()[0]["entries"] == len(desired(sqlite_db))


def _file_state(proc: RunningHAProxy) -> dict[str, str]:
    """What a reload would load: the shard files, overridden by the overlay file."""

    def read(name: str) -> dict[str, str]:
        path = proc.workdir / name
        lines = path.read_text().splitlines() if path.exists() else []
        return dict(line.split(" ", 1) for line in lines if line and not line.startswith("#"))

    out: dict[str, str] = {}
    for name in LAYOUT_NAMES:
        out.update(read(name))
    for k, v in read(OVERLAY_MAP_NAME).items():
        if v == OVERLAY_TOMBSTONE:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def test_files_never_grant_a_confirmed_deprovision(
    sqlite_db: Database, start_haproxy: Callable[[], RunningHAProxy]
) -> None:
    """During a burst of deactivations (the shard files debounced behind), after each
    confirmation the files a reload would load deny every confirmed deprovision."""
    proc = start_haproxy()
    with running_engine(sqlite_db, [target(proc, "t1")]) as engine:
        converge(sqlite_db, engine, put(sqlite_db, {key(i): ",eng," for i in range(300)}))
        for i in range(0, 60, 3):
            converge(sqlite_db, engine, put(sqlite_db, {key(i): None, key(i + 1): ",x,"}))
            files = _file_state(proc)
            assert all(key(j) not in files for j in range(0, i + 1, 3))
            assert files.get(key(i + 1)) in (",eng,", ",x,")  # a grant may lag in files


def test_batch_too_big_for_the_overlay_goes_to_the_shards(
    sqlite_db: Database,
    start_haproxy: Callable[[], RunningHAProxy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc = start_haproxy()
    with running_engine(sqlite_db, [target(proc, "t1")]) as engine:
        _settled_then_held(sqlite_db, engine, monkeypatch, 100)
        converge(sqlite_db, engine, put(sqlite_db, {key(1): None, key(2): ",ops,"}))
        assert set(overlay_state(proc)) == {key(1), key(2)}
        monkeypatch.setattr(overlay_mod, "OVERLAY_LIMIT", 10)
        # 30 changes > the limit: straight to the shards; the overlay's older entries for
        # these keys are retired (else they would hide the newer shard values).
        big = put(sqlite_db, {key(i): ",big," for i in range(1, 31)})
        converge(sqlite_db, engine, big)
        assert overlay_state(proc) == {}
        assert engine.followers[0].overlay.pending_count == 0
        assert live_state(proc) == shard_state(proc) == desired(sqlite_db)
        assert http_status(proc, key(1)) == 200


def test_config_without_overlay_updates_the_shards(
    sqlite_db: Database, haproxy_factory: Callable[..., RunningHAProxy]
) -> None:
    """Configs rendered before the overlay existed: updates go straight to the shards."""
    proc = haproxy_factory(haproxy_config(overlay=False), files={n: "" for n in LAYOUT_NAMES})
    with running_engine(sqlite_db, [target(proc, "t1")]) as engine:
        converge(sqlite_db, engine, put(sqlite_db, {key(i): ",eng," for i in range(50)}))
        changes = put(sqlite_db, {key(3): None, key(4): ",ops,"})
        converge(sqlite_db, engine, changes)
        layout = engine.followers[0].layout
        assert layout is not None and layout.overlay is None
        assert shard_state(proc) == desired(sqlite_db)
        assert http_status(proc, key(3)) == 403


def test_a_resync_makes_the_session_cutter_sweep_even_with_sweeps_off(
    sqlite_db: Database, start_haproxy: Callable[[], RunningHAProxy]
) -> None:
    """A full resync (here: at start-up) applies deprovisions the cutter was never offered
    one by one (a reload or restart racing a deactivation), so the cutter checks every live
    stream right after it, whatever live_session_sweep_seconds says (0: no periodic sweep)."""
    proc = start_haproxy()

    def last_sweep() -> str | None:
        with sqlite_db.read() as conn:
            return conn.execute(
                sa.select(tables.targets.c.last_session_sweep).where(tables.targets.c.name == "t1")
            ).scalar()

    with running_engine(sqlite_db, [target(proc, "t1")], live_session_sweep_seconds=0.0) as engine:
        wait_until(lambda: last_sweep() is not None)
        first = last_sweep()
        time.sleep(1.5)
        assert last_sweep() == first  # no periodic sweep
        engine.resync("t1")
        wait_until(lambda: last_sweep() != first)
