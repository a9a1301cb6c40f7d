"""The change log's order is commit order across processes (docs/fleet.md, "Why a follower
never skips a row"): API replicas on one PostgreSQL, followers reading ``seq > cursor``.

PostgreSQL hands out a ``bigserial`` at INSERT, not at COMMIT: two writers that do not
serialise can commit out of sequence order, and a follower that already moved past the
later seq never sees the earlier one (Pomerium's documented weakness,
research/round2/04-scale-out.md). scimgate's writers lock ``audit_head`` first
(``store.db.Database.write``), so a seq is only taken once every earlier writer committed.
The first test shows the hazard is real on this server; the second that our writers close
it; the third hammers two real replica processes with concurrent SCIM writes while
followers poll, and checks that every follower saw every row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from scimgate.app import tokens
from scimgate.instance.fleet import prepare_api_dir
from scimgate.store import migrate, tables
from scimgate.store.db import Database, log_committed
from scimgate.store.outbox import ChangeLogReader, MapChange
from tests.support.fleet import Replica, start_replica
from tests.support.scim import tag, user_body

pytestmark = pytest.mark.postgres


def _psycopg_dsn(url: str) -> str:
    u = sa.engine.make_url(url)
    return f"dbname={u.database} user={u.username} host={u.query['host']} port={u.query['port']}"


def _insert_change(conn: psycopg.Connection, key: str) -> int:
    row = conn.execute(
        "INSERT INTO change_log (identity_key, value, user_id, deprovision, created)"
        " VALUES (%s, ',a,', NULL, false, '2026-01-01T00:00:00.000000Z') RETURNING seq",
        (key,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_unserialised_writers_let_a_follower_skip_a_row(pg_db_url: str) -> None:
    """The control: without the writers' lock, a seq taken first can commit last, and a
    follower reading ``seq > cursor`` moves past it for good."""
    db = Database(pg_db_url)
    migrate.upgrade(db)
    reader = ChangeLogReader(db)
    try:
        dsn = _psycopg_dsn(pg_db_url)
        with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
            early = _insert_change(first, "A" * 64)  # takes its seq, commits later
            late = _insert_change(second, "B" * 64)
            second.commit()
            assert late > early
            seen = [tc.change.seq for tc in reader.read(0, 100)]
            cursor = max(seen)
            first.commit()
            after = [tc.change.seq for tc in reader.read(cursor, 100)]
        assert seen == [late]
        assert early not in after  # skipped for good: the hazard our writers must close
    finally:
        reader.close()
        db.dispose()


def _logged_write(db: Database, key: str, started: threading.Event, hold: float) -> int:
    with db.write() as conn:
        started.set()
        time.sleep(hold)
        seq = int(
            conn.execute(
                tables.change_log.insert().returning(tables.change_log.c.seq),
                {"identity_key": key, "value": ",a,", "user_id": None, "deprovision": False,
                 "created": "2026-01-01T00:00:00.000000Z"},
            ).scalar_one()
        )  # fmt: skip
        log_committed(conn, [MapChange(seq, key, ",a,", None, False)])
    return seq


def test_serialised_writers_take_seqs_in_commit_order(pg_db_url: str) -> None:
    """Two processes' worth of writers (two engines, two pools): the second writer waits for
    the first one's commit before it can take a seq, so a follower that saw the second
    row has already been able to see the first."""
    one, two = Database(pg_db_url), Database(pg_db_url)
    migrate.upgrade(one)
    reader = ChangeLogReader(one)
    try:
        first_in = threading.Event()
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(_logged_write, one, "C" * 64, first_in, 0.5)
            assert first_in.wait(5)
            second = pool.submit(_logged_write, two, "D" * 64, threading.Event(), 0.0)
            time.sleep(0.2)
            # The second writer is blocked on the audit head: nothing is visible yet.
            assert reader.read(0, 100) == []
            assert not second.done()
            early, late = first.result(10), second.result(10)
        assert late > early
        assert [tc.change.seq for tc in reader.read(0, 100)] == [early, late]
    finally:
        reader.close()
        one.dispose()
        two.dispose()


# ---- two real replicas hammered, three followers polling -----------------------------------


@pytest.fixture
def replicas(tmp_path: Path, pg_db_url: str) -> Iterator[tuple[list[Replica], str, str]]:
    api_dir = tmp_path / "api"
    settings = prepare_api_dir(api_dir, pg_db_url)
    db = Database(settings.database_url)
    try:
        token = tokens.create(db, "fleet-test")
    finally:
        db.dispose()
    started: list[Replica] = []
    try:
        for i in range(2):
            started.append(start_replica(api_dir, f"replica{i + 1}", pg_db_url))
        yield started, token, pg_db_url
    finally:
        for r in started:
            r.proc.stop()


WRITERS = 8
WRITES_PER_WRITER = 25
FOLLOWERS = 3


def test_followers_see_every_row_of_two_hammered_replicas(
    replicas: tuple[list[Replica], str, str],
) -> None:
    reps, token, url = replicas
    db = Database(url)
    stop = threading.Event()
    seen: list[list[int]] = [[] for _ in range(FOLLOWERS)]

    def follow(i: int) -> None:
        # A follower as the engine's: read after the cursor, move the cursor to the last
        # row read; small batches so that it reads many times during the burst.
        reader = ChangeLogReader(db)
        cursor = 0
        try:
            while True:
                done = stop.is_set()  # read once more after the writers finished
                for tc in reader.read(cursor, 7):
                    seen[i].append(tc.change.seq)
                    cursor = tc.change.seq
                if done:
                    return
                time.sleep(0.001)
        finally:
            reader.close()

    def write(i: int) -> list[int]:
        statuses = []
        with reps[i % 2].client(token) as scim, reps[(i + 1) % 2].client(token) as other:
            for n in range(WRITES_PER_WRITER):
                client = scim if n % 2 == 0 else other  # both replicas, interleaved
                r = client.post("/Users", json=user_body(f"h{i}-{n}-{tag()}@example.com"))
                statuses.append(r.status_code)
                if r.status_code == 201 and n % 3 == 0:
                    uid = r.json()["id"]
                    patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                             "Operations": [{"op": "replace", "path": "active", "value": False}]}  # fmt: skip
                    statuses.append(client.patch(f"/Users/{uid}", json=patch).status_code)
        return statuses

    followers = [threading.Thread(target=follow, args=(i,)) for i in range(FOLLOWERS)]
    for t in followers:
        t.start()
    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            results = [
                s for f in [pool.submit(write, i) for i in range(WRITERS)] for s in f.result()
            ]
    finally:
        stop.set()
        for t in followers:
            t.join(30)
    try:
        assert results and all(s in (200, 201) for s in results), sorted(set(results))
        with db.read() as conn:
            log = [
                int(s)
                for s in conn.execute(sa.select(tables.change_log.c.seq).order_by("seq")).scalars()
            ]
        # Every create logged an entry and every deactivation a deprovision: the log holds
        # at least one row per acknowledged write.
        assert len(log) >= len(results)
        for i in range(FOLLOWERS):
            assert seen[i] == log, f"follower {i} missed {sorted(set(log) - set(seen[i]))[:10]}"
    finally:
        db.dispose()
