"""Console admins against a real SQLite file: credentials hashed, sign-in, server-side
sessions (expiry, idle, revocation by sign-out, rotation and revocation of the admin), the
bound on sessions per admin, and every action audited with the admin's name."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from scimgate.app import admins
from scimgate.audit import log as audit
from scimgate.store import migrate, tables
from scimgate.store.db import Database

CLIENT = audit.Actor(token=None, client="127.0.0.9", user_agent="pytest")


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'c.db'}")
    migrate.upgrade(database)
    return database


def _events(db: Database, kind: str) -> list[dict]:
    with db.read() as conn:
        return [e for e in audit.iter_events(conn) if e["kind"] == kind]


def test_credential_is_stored_only_as_a_hash_and_signs_in(db: Database) -> None:
    secret = admins.create(db, "alice", "operator")
    assert secret.startswith(admins.PREFIX) and len(secret) > 40
    with db.read() as conn:
        stored = conn.execute(sa.select(tables.admin_accounts)).mappings().one()
    assert secret not in str(dict(stored)) and stored["secret_hash"] == admins.hash_secret(secret)
    assert admins.sign_in(db, "alice", secret + "x", CLIENT, lifetime=60) is None
    assert admins.sign_in(db, "bob", secret, CLIENT, lifetime=60) is None
    done = admins.sign_in(db, "alice", secret, CLIENT, lifetime=60)
    assert done is not None and done.session.role == "operator"
    session = admins.session_for(db, done.secret, idle=60)
    assert session is not None and session.admin == "alice" and session.is_operator
    [ev] = _events(db, "console.signed_in")
    assert ev["actor"] == "admin:alice" and ev["client"] == "127.0.0.9"
    assert done.secret not in str(ev["detail"])


def test_sessions_end_on_sign_out_rotation_revocation_expiry_and_idleness(db: Database) -> None:
    secret = admins.create(db, "alice", "viewer")

    def new_session(lifetime: float = 60) -> str:
        done = admins.sign_in(db, "alice", secret, CLIENT, lifetime=lifetime)
        assert done is not None
        return done.secret

    s1 = new_session()
    session = admins.session_for(db, s1, idle=60)
    assert session is not None
    admins.sign_out(db, session, admins.admin_actor("alice"))
    assert admins.session_for(db, s1, idle=60) is None
    assert _events(db, "console.signed_out")[0]["actor"] == "admin:alice"

    short = new_session(lifetime=0.001)
    time.sleep(0.01)  # past its lifetime (the check itself can run within a millisecond)
    assert admins.session_for(db, short, idle=60) is None  # expired
    s3 = new_session()
    assert admins.session_for(db, s3, idle=-1) is None  # idle longer than allowed

    s4 = new_session()
    secret = admins.rotate(db, "alice")
    assert admins.session_for(db, s4, idle=60) is None
    assert _events(db, "admin.rotated")[0]["detail"]["sessions_ended"] >= 1
    s5 = new_session()
    admins.revoke(db, "alice")
    assert admins.session_for(db, s5, idle=60) is None
    assert admins.sign_in(db, "alice", secret, CLIENT, lifetime=60) is None
    with pytest.raises(admins.AdminError):
        admins.rotate(db, "alice")


def test_live_sessions_per_admin_are_bounded_and_expired_rows_pruned(db: Database) -> None:
    secret = admins.create(db, "alice", "viewer")
    cookies = []
    for _ in range(admins.SESSIONS_PER_ADMIN + 5):
        done = admins.sign_in(db, "alice", secret, CLIENT, lifetime=60)
        assert done is not None
        cookies.append(done.secret)
    live = [c for c in cookies if admins.session_for(db, c, idle=60) is not None]
    assert live == cookies[-admins.SESSIONS_PER_ADMIN :]


def test_names_and_roles_are_checked(db: Database) -> None:
    with pytest.raises(admins.AdminError, match="role"):
        admins.create(db, "alice", "root")
    with pytest.raises(admins.AdminError, match="names"):
        admins.create(db, "al ice", "viewer")
    admins.create(db, "alice", "viewer")
    with pytest.raises(admins.AdminError, match="exists"):
        admins.create(db, "alice", "viewer")
    [info] = admins.list_admins(db)
    assert (info.name, info.role, info.revoked) == ("alice", "viewer", None)


def test_admin_cli_create_list_rotate_revoke(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from scimgate.cli import main

    run = CliRunner()
    d = ["--dir", str(tmp_path)]
    # admin commands, like every command but serve/up/init, need an instance directory
    assert run.invoke(main, ["admin", "list", *d]).exit_code == 2
    assert run.invoke(main, ["init", *d]).exit_code == 0
    created = run.invoke(main, ["admin", "create", "alice", "--role", "operator", *d])
    assert created.exit_code == 0, created.output
    first = created.stdout.strip().splitlines()[0]
    assert first.startswith(admins.PREFIX)
    listed = run.invoke(main, ["admin", "list", "--json", *d])
    [row] = json.loads(listed.stdout)
    assert (row["name"], row["role"], row["revoked"]) == ("alice", "operator", None)
    rotated = run.invoke(main, ["admin", "rotate", "alice", *d])
    assert rotated.exit_code == 0, rotated.output
    second = rotated.stdout.strip().splitlines()[0]
    db = Database(f"sqlite:///{tmp_path / 'scimgate.db'}")
    try:
        assert not admins.credential_ok(db, "alice", first)
        assert admins.credential_ok(db, "alice", second)
        assert run.invoke(main, ["admin", "revoke", "alice", *d]).exit_code == 0
        assert not admins.credential_ok(db, "alice", second)
    finally:
        db.dispose()
    again = run.invoke(main, ["admin", "revoke", "alice", *d])
    assert again.exit_code != 0 and "no active admin" in again.output
    bad = run.invoke(main, ["admin", "create", "bob", "--role", "root", *d])
    assert bad.exit_code != 0
