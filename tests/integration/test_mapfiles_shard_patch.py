"""Shard map files patched for a deprovisioning batch equal the desired state (real SQLite,
real files), for both shard layouts, including a shard file that does not exist yet."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from scimgate.haproxy.mapfile import read_map_file
from scimgate.store import migrate, tables
from scimgate.store.db import Database
from scimgate.sync.layout import MapLayout
from scimgate.sync.mapfiles import MapFileWriter
from scimgate.sync.state import read_snapshot


def _key() -> str:
    return secrets.token_hex(32).upper()


@pytest.mark.parametrize("shards", [1, 16, 256])
def test_patched_files_equal_desired_state(tmp_path: Path, shards: int) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x.db'}", sqlite_synchronous="OFF")
    migrate.upgrade(db)
    E = tables.map_entries
    rows = [{"identity_key": _key(), "value": ",eng,", "user_id": f"u{i}"} for i in range(600)]
    with db.write() as conn:
        conn.execute(E.insert(), rows)
    layout = MapLayout(str(tmp_path), shards)
    writer = MapFileWriter(layout)
    assert writer.write(read_snapshot(db))
    removed, downgraded, added = rows[0]["identity_key"], rows[1]["identity_key"], _key()
    with db.write() as conn:
        conn.execute(E.delete().where(E.c.identity_key == removed))
        conn.execute(E.update().where(E.c.identity_key == downgraded).values(value=","))
        conn.execute(E.insert().values(identity_key=added, value=",admins,", user_id="new"))
    if shards > 1:  # a shard file missing on disk is rebuilt from the store
        Path(layout.path_of(added)).unlink()
    writer.write_shards_of(db, [removed, downgraded, added])
    on_disk: dict[str, str] = {}
    for path in layout.paths:
        on_disk.update(read_map_file(path))
    with db.read() as conn:
        desired = {
            k: v for k, v in conn.execute(E.select().with_only_columns(E.c.identity_key, E.c.value))
        }
    assert on_disk == desired
    assert removed not in on_disk and on_disk[downgraded] == "," and on_disk[added] == ",admins,"
