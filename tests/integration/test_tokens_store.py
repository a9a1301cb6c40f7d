"""Token lifecycle against a real SQLite file: a revoked name can be issued again."""

import time
from pathlib import Path

import pytest

from scimgate.app import tokens
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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_cache_keeps_a_row_for_its_ttl_only_and_never_an_unknown_secret(
    db: Database,
) -> None:
    clock = _Clock()
    cache = tokens.TokenCache(ttl=0.5, clock=clock)
    secret = tokens.create(db, "entra")
    assert cache.lookup(secret) is None  # not read yet: the database must be asked
    assert cache.lookup("") == tokens.Verdict(None, "missing")
    with db.read() as conn:
        assert cache.authenticate(conn, secret).reason == "ok"
        assert cache.authenticate(conn, "sgt_unknown").reason == "unknown"
    assert cache.lookup("sgt_unknown") is None
    hit = cache.lookup(secret)
    assert hit is not None and hit.reason == "ok" and hit.name == "entra"

    # Revoked elsewhere (another process): the cached row may say "ok" for at most ttl,
    # and a read of the row (what every request does in its work's transaction) does not.
    tokens.revoke(db, "entra")
    clock.now += 0.4
    stale = cache.lookup(secret)
    assert stale is not None and stale.reason == "ok"
    with db.read() as conn:
        assert cache.authenticate(conn, secret).reason == "revoked"
    fresh = cache.lookup(secret)
    assert fresh is not None and fresh.reason == "revoked"
    clock.now += 0.5
    assert cache.lookup(secret) is None


def test_token_cache_applies_expiry_to_the_cached_row(db: Database) -> None:
    clock = _Clock()
    cache = tokens.TokenCache(ttl=60, clock=clock)
    secret = tokens.create(db, "short", expires_in=tokens.parse_duration("1s"))
    with db.read() as conn:
        assert cache.authenticate(conn, secret).reason == "ok"
    time.sleep(1.1)
    hit = cache.lookup(secret)
    assert hit is not None and hit.reason == "expired"
