"""Database: the write discipline's helpers used by the API (inline reads, first check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scimgate.store import migrate
from scimgate.store.db import Database, _is_file_database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'd.db'}")
    migrate.upgrade(database)
    return database


def test_inline_reads_see_committed_writes_and_never_write(db: Database) -> None:
    assert db.inline_reads
    with db.write() as conn:
        conn.exec_driver_sql("UPDATE audit_head SET seq = 7 WHERE id = 1")
    with db.inline():
        with db.read() as conn:
            assert conn.exec_driver_sql("SELECT seq FROM audit_head").scalar_one() == 7
            assert conn.engine is not db.engine  # connections of its own
        with pytest.raises(RuntimeError, match="never run inline"), db.write():
            pass
    # In memory, every connection would be a database of its own: no inline connections.
    assert not _is_file_database("sqlite://")
    assert not _is_file_database("sqlite:///:memory:")
    assert _is_file_database(db.url)


def test_first_check_runs_once_in_the_first_transaction_and_rolls_it_back(db: Database) -> None:
    seen: list[Any] = []

    def check(conn: Any) -> None:
        seen.append(conn)
        raise LookupError("token changed")

    with db.checked(check) as first:
        assert not first.ran()
        with pytest.raises(LookupError), db.write() as conn:
            conn.exec_driver_sql("UPDATE audit_head SET seq = 9 WHERE id = 1")
        assert first.ran()
        with db.read() as conn:  # not checked again
            assert conn.exec_driver_sql("SELECT seq FROM audit_head").scalar_one() == 0
    assert len(seen) == 1
