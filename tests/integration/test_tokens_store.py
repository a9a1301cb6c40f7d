"""Token lifecycle against a real SQLite file: a revoked name can be issued again."""

from pathlib import Path

import pytest

from scimgate import tokens
from scimgate.store import migrate
from scimgate.store.db import Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 't.db'}")
    migrate.upgrade(database)
    return database


def _verdict(db: Database, secret: str) -> str:
    with db.read() as conn:
        return tokens.authenticate(conn, secret).reason


def test_revoked_name_can_be_issued_again_and_old_secret_stays_dead(db: Database) -> None:
    old = tokens.create(db, "okta")
    with pytest.raises(tokens.TokenError, match="active token named 'okta' exists"):
        tokens.create(db, "okta")
    tokens.revoke(db, "okta")
    assert _verdict(db, old) == "revoked"
    new = tokens.create(db, "okta")
    assert _verdict(db, new) == "ok"
    assert _verdict(db, old) == "unknown"
    [info] = tokens.list_tokens(db)
    assert info.revoked is None and info.name == "okta"


def test_sqlite_file_is_owner_only(db: Database, tmp_path: Path) -> None:
    assert (tmp_path / "t.db").stat().st_mode & 0o777 == 0o600
