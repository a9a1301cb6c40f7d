"""The store announces committed change-log rows (Database.on_commit), on real SQLite: after
the commit and with the writer lock released, never for a rolled-back transaction, and a
failing listener does not undo a committed write."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from scimgate.store import migrate, outbox
from scimgate.store.db import Database

KEY = "A" * 64


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'c.db'}", sqlite_synchronous="OFF")
    migrate.upgrade(database)
    return database


def test_listener_hears_committed_rows_after_the_lock_is_released(db: Database) -> None:
    heard: list[list[Any]] = []
    writer_free: list[bool] = []

    def listener(changes: list[Any]) -> None:
        heard.append(changes)
        # Another writer gets the lock at once: the listener runs outside the transaction.
        done = threading.Event()

        def write_elsewhere() -> None:
            with db.write():
                pass
            done.set()

        other = threading.Thread(target=write_elsewhere, daemon=True)
        other.start()
        writer_free.append(done.wait(5))

    db.on_commit(listener)
    with db.write() as conn:
        logged = outbox.log_user_entries(conn, [("u1", {KEY: ",eng,"})])
        assert heard == []  # not before the commit
    assert heard == [logged] and [c.identity_key for c in logged] == [KEY]
    assert writer_free == [True]
    with db.read() as conn:
        assert outbox.head_seq(conn) == logged[0].seq
    with db.write():
        pass  # a transaction that logged nothing is not announced
    assert len(heard) == 1
    db.dispose()


def test_rolled_back_rows_are_never_announced(db: Database) -> None:
    heard: list[list[Any]] = []
    db.on_commit(heard.append)
    with pytest.raises(RuntimeError), db.write() as conn:
        outbox.log_user_entries(conn, [("u1", {KEY: ",eng,"})])
        raise RuntimeError("the operation failed after logging")
    assert heard == []
    with db.read() as conn:
        assert outbox.head_seq(conn) == 0
    db.dispose()


def test_a_failing_listener_leaves_the_write_committed(db: Database) -> None:
    def broken(_changes: list[Any]) -> None:
        raise RuntimeError("listener bug")

    heard: list[list[Any]] = []
    db.on_commit(broken)
    db.on_commit(heard.append)  # later listeners still hear it
    with db.write() as conn:
        logged = outbox.log_user_entries(conn, [("u1", {KEY: ",eng,"})])
    assert heard == [logged]
    with db.read() as conn:
        assert outbox.desired_entries(conn) == {KEY: ",eng,"}
    db.dispose()
