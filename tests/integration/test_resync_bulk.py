"""full_resync's bulk path (one aggregate read, one regex per shard, payloads on
non-interactive connections) against a real HAProxy: the maps and the map files end up
exactly the desired state, and rows a tampered store holds (an LF smuggling a second
entry, a lowercase key, a value outside the slug charset) never reach HAProxy or the files:
the resync falls back to the per-entry path, which drops them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scimgate.haproxy.mapfile import read_map_file
from scimgate.store import migrate, tables
from scimgate.store.db import Database
from scimgate.sync import state
from scimgate.sync.layout import MapLayout
from scimgate.sync.mapfiles import MapFileWriter
from scimgate.sync.reconcile import full_resync
from tests.fixtures.haproxy import RunningHAProxy
from tests.integration.test_sync_engine import SHARDS, haproxy_config, key, layout_files

pytestmark = pytest.mark.haproxy

E = tables.map_entries


@pytest.fixture
def proc(haproxy_factory: Callable[..., RunningHAProxy]) -> RunningHAProxy:
    return haproxy_factory(haproxy_config(), files=layout_files())


def _db(tmp_path: Path, rows: dict[str, str]) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}", sqlite_synchronous="OFF")
    migrate.upgrade(db)
    with db.write() as conn:
        conn.execute(
            E.insert(), [{"identity_key": k, "value": v, "user_id": "u"} for k, v in rows.items()]
        )
    return db


def _live(proc: RunningHAProxy, layout: MapLayout) -> dict[str, str]:
    out: dict[str, str] = {}
    with proc.client() as c:
        for path in layout.paths:
            out.update(c.show_map(path))
    return out


def _files(layout: MapLayout) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in layout.paths:
        out.update(read_map_file(path))
    return out


def test_bulk_resync_equals_desired_state(tmp_path: Path, proc: RunningHAProxy) -> None:
    good = {key(i): (",", ",eng,", ",admins,eng,")[i % 3] for i in range(5000)}
    db = _db(tmp_path, good)
    assert state.read_resync_payloads(db, SHARDS) is not None  # the bulk path applies
    layout = MapLayout(str(proc.workdir), SHARDS)
    with proc.client() as client:
        client.replace_maps([(p, {key("old"): ","}) for p in layout.paths[:1]])
        result = full_resync(db, client, layout, "t", "test", writer=MapFileWriter(layout))
    assert result.entries == len(good)
    assert _live(proc, layout) == good
    assert _files(layout) == good


def test_tampered_rows_never_reach_haproxy(tmp_path: Path, proc: RunningHAProxy) -> None:
    good = {key(i): ",eng," for i in range(2000)}
    smuggled = key("smuggled")
    # Lowercase, but its prefix is a digit: it lands in a shard's bucket and the regex
    # has to catch it.
    lower = next(k for i in range(100) if (k := key(f"lower{i}").lower())[0].isdigit())
    hostile = {
        key("lf"): ",eng,\n" + smuggled + " ,admins,",  # would read as a second, valid line
        lower: ",eng,",
        key("upper-slug"): ",Admins,",
        key("semicolon"): ",eng;show info,",
    }
    db = _db(tmp_path, {**good, **hostile})
    assert state.read_resync_payloads(db, SHARDS) is None  # the LF: line count != row count
    layout = MapLayout(str(proc.workdir), SHARDS)
    with proc.client() as client:
        result = full_resync(db, client, layout, "t", "test", writer=MapFileWriter(layout))
    assert result.entries == len(good)
    live = _live(proc, layout)
    assert live == good and smuggled not in live
    assert _files(layout) == good
    # Without the LF row the bulk read applies, and its check refuses the rest in a body.
    with db.write() as conn:
        conn.execute(E.delete().where(E.c.identity_key == key("lf")))
    payloads = state.read_resync_payloads(db, SHARDS)
    assert payloads is not None
    with pytest.raises(Exception, match="validation"):
        payloads.bodies.wait()
    with proc.client() as client:
        assert full_resync(db, client, layout, "t", "test").entries == len(good)
    assert _live(proc, layout) == good
