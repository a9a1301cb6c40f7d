"""Database: the write discipline's helpers used by the API (inline reads, first check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scimgate.store import db as db_module, migrate
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


def test_a_connection_killed_while_idle_is_replaced_at_checkout(
    pg_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: connections idle longer than PING_IDLE_AFTER are pinged at checkout (the
    others are not: a ping per transaction is a round trip per transaction)."""
    url = pg_server.create_database()
    database = Database(url)
    migrate.upgrade(database)
    with database.read() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    killer = sa.create_engine(url)
    with killer.connect() as other:
        assert other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)}, 5000)").scalar()
        other.commit()
    killer.dispose()
    monkeypatch.setattr(db_module, "PING_IDLE_AFTER", 0.0)
    with database.read() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
    database.dispose()
