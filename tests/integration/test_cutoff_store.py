"""Token cut-off in the store (SQLite): a deprovisioned key records its not-before time, a
reprovisioned one carries it in its map value, a policy rebuild keeps it, and with the
cut-off off nothing is recorded."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from scimgate.app.enforcement import PolicyEnforcement, rebuild_all, refresh_users
from scimgate.policy.compiler import MAP_VALUE_RE, with_not_before
from scimgate.policy.jwtmint import demo_policy_yaml
from scimgate.policy.model import load_policy
from scimgate.store import migrate, outbox, resources, tables
from scimgate.store.db import Database, now_iso

U, E = tables.users, tables.map_entries


def setup(tmp_path: Path, cutoff: bool) -> tuple[Database, PolicyEnforcement]:
    db = Database(f"sqlite:///{tmp_path / 'c.db'}")
    migrate.upgrade(db)
    policy_file = tmp_path / "policy.yaml"
    text = demo_policy_yaml()
    if not cutoff:
        text = text.replace("cutoff: true", "cutoff: false")
    policy_file.write_text(text)
    enforcement = PolicyEnforcement(load_policy(policy_file), b"k" * 32)
    assert enforcement.cutoff is cutoff
    now = now_iso()
    with db.write() as conn:
        values = resources._user_values({"userName": "ann", "emails": [], "active": True})
        conn.execute(
            U.insert().values(id="u1", **values, version=1, created=now, last_modified=now)
        )
    return db, enforcement


def set_active(
    db: Database, enforcement: PolicyEnforcement, active: bool
) -> list[outbox.MapChange]:
    with db.write() as conn:
        conn.execute(U.update().where(U.c.id == "u1").values(active=active))
        return refresh_users(conn, ["u1"], enforcement.entries, cutoff=enforcement.cutoff)


def entries(db: Database) -> dict[str, str]:
    with db.read() as conn:
        return dict(conn.execute(sa.select(E.c.identity_key, E.c.value)).all())


def test_value_grammar() -> None:
    assert with_not_before(",admins,", None) == ",admins,"
    assert with_not_before(",admins,", 1764770001) == ",admins,@1764770001"
    for value in (",", ",admins,", ",@1", ",a,b,@1764770001", "-"):
        assert MAP_VALUE_RE.fullmatch(value), value
    for value in ("@1", ",admins", ",a,@", ",a,@x", ",a,@1@2", ",a,~1"):
        assert not MAP_VALUE_RE.fullmatch(value), value
    assert outbox.is_deprovision(",admins,@5", ",admins,@9") is False
    assert outbox.is_deprovision(",admins,@5", ",@9") is True


def test_reprovisioned_entry_carries_its_not_before(tmp_path: Path) -> None:
    db, enforcement = setup(tmp_path, cutoff=True)
    with db.write() as conn:
        refresh_users(conn, ["u1"], enforcement.entries, cutoff=True)
    ((key, value),) = entries(db).items()
    assert value == ","  # never deprovisioned: no not-before
    before = int(time.time())
    changes = set_active(db, enforcement, False)
    assert [c.value for c in changes] == [None] and entries(db) == {}
    with db.read() as conn:
        (not_before,) = outbox.cutoffs_of(conn, [key]).values()
    assert before + 1 <= not_before <= int(time.time()) + 1
    set_active(db, enforcement, True)
    assert entries(db) == {key: f",@{not_before}"}
    # a policy rebuild computes the same value: nothing changes
    with db.write() as conn:
        assert rebuild_all(conn, enforcement.entries, cutoff=True) == []
    # and without the cut-off, the rebuild drops the not-before
    with db.write() as conn:
        changes = rebuild_all(conn, enforcement.entries, cutoff=False)
    assert [(c.value, c.deprovision) for c in changes] == [(",", False)]
    db.dispose()


def test_without_cutoff_nothing_is_recorded(tmp_path: Path) -> None:
    db, enforcement = setup(tmp_path, cutoff=False)
    with db.write() as conn:
        refresh_users(conn, ["u1"], enforcement.entries, cutoff=False)
    set_active(db, enforcement, False)
    set_active(db, enforcement, True)
    assert list(entries(db).values()) == [","]
    with db.read() as conn:
        assert outbox.cutoffs_of(conn) == {}
    db.dispose()
