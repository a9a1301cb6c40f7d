"""``rebuild_all`` (set-wise) gives exactly what the per-user computation gives:
the same map_entries and the same change log, order included, on SQLite and PostgreSQL.

The fixture mixes what the per-user rules care about: active and inactive users (``active``
as bool and as a string), several e-mails per user, a user with none, identities that two
users produce (the first owner keeps them, also when the owner comes later in id order),
non-ASCII identities, users in several groups (by displayName and by externalId) and in
groups the policy ignores, deleted users whose entries remain, and entries built under an
earlier state (so the rebuild deletes, inserts and updates)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scimgate.app.enforcement import PolicyEnforcement, rebuild_all, refresh_users
from scimgate.policy.jwtmint import demo_policy_yaml
from scimgate.policy.model import load_policy
from scimgate.store import migrate, resources, tables
from scimgate.store.db import Database, now_iso

U, E, C, G, M = tables.users, tables.map_entries, tables.change_log, tables.groups, tables.members


def per_user_rebuild(conn: sa.Connection, entries_fn: Any, batch: int = 7) -> list[Any]:
    """The reference: refresh_users over every user in id order, then the owners of
    entries whose user is gone (rebuild_all before it went set-wise)."""
    user_ids = [r[0] for r in conn.execute(sa.select(U.c.id).order_by(U.c.id))]
    stale = sorted(
        r[0]
        for r in conn.execute(
            sa.select(E.c.user_id).distinct().where(E.c.user_id.not_in(sa.select(U.c.id)))
        )
    )
    out: list[Any] = []
    for i in range(0, len(user_ids), batch):
        out.extend(refresh_users(conn, user_ids[i : i + batch], entries_fn))
    out.extend(refresh_users(conn, stale, entries_fn))
    return out


def _uid(i: int) -> str:
    # Ids whose order differs from insertion order.
    return hashlib.sha256(b"user%d" % i).hexdigest()[:32]


def _user(i: int) -> dict[str, Any]:
    emails: list[dict[str, Any]] = [
        {"value": f"User{i}@Example.com", "primary": True},
        {"value": f"alt{i}@example.org"},
    ][: i % 3]
    if i % 11 == 0:  # one e-mail is another user's userName: a shared identity
        emails.append({"value": f"user{(i * 7) % 60}"})
    if i % 13 == 0:
        emails.append({"value": "jürgen@example.com"})  # non-ASCII: never an identity
    active: Any = {0: True, 1: True, 2: False, 3: "true", 4: "False"}[i % 5]
    return {"userName": f"user{i}", "emails": emails, "active": active}


def _build(db: Database, tmp_path: Path) -> PolicyEnforcement:
    migrate.upgrade(db)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(demo_policy_yaml())
    enforcement = PolicyEnforcement(load_policy(policy_file), b"k" * 32)
    now = now_iso()
    with db.write() as conn:
        for i in range(60):
            values = resources._user_values(_user(i))
            conn.execute(
                U.insert().values(id=_uid(i), **values, version=1, created=now, last_modified=now)
            )
        groups = [("g-admins", "Admins", None), ("g-eng", "Eng team", "Engineering"),
                  ("g-other", "Other", "x-1")]  # fmt: skip
        for gid, name, ext in groups:
            conn.execute(
                G.insert().values(
                    id=gid, display_name=name, display_name_lower=name.lower(), external_id=ext,
                    attrs={}, version=1, created=now, last_modified=now,
                )
            )  # fmt: skip
        members = [("g-admins", _uid(i)) for i in range(0, 60, 4)]
        members += [("g-eng", _uid(i)) for i in range(0, 60, 3)]
        members += [("g-other", _uid(i)) for i in range(0, 60, 5)]
        conn.execute(M.insert(), [{"group_id": g, "member_id": u} for g, u in members])
        # Entries as an earlier state left them, then that state changes.
        per_user_rebuild(conn, enforcement.entries)
        conn.execute(M.delete().where(M.c.group_id == "g-admins", M.c.member_id == _uid(8)))
        conn.execute(M.insert().values(group_id="g-admins", member_id=_uid(9)))
        conn.execute(M.insert().values(group_id="g-eng", member_id=_uid(10)))
        for i in (0, 6, 21):  # users gone, their entries still there
            conn.execute(U.delete().where(U.c.id == _uid(i)))
        for i in (1, 5, 33):  # deactivated
            conn.execute(U.update().where(U.c.id == _uid(i)).values(active=False))
        for i in (7, 14):  # e-mails changed
            attrs = dict(conn.execute(sa.select(U.c.attrs).where(U.c.id == _uid(i))).scalar_one())
            attrs["emails"] = [{"value": f"new{i}@example.com"}, {"value": f"user{i + 1}"}]
            conn.execute(U.update().where(U.c.id == _uid(i)).values(attrs=attrs))
        # An entry for an identity another user now claims, held by a later user id.
        conn.execute(E.update().where(E.c.user_id == _uid(3)).values(value=",stale,"))
        conn.execute(C.delete())
    return enforcement


def _state(db: Database) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with db.read() as conn:
        entries = sorted(conn.execute(sa.select(E.c.identity_key, E.c.value, E.c.user_id)))
        log = [
            tuple(r)
            for r in conn.execute(
                sa.select(C.c.identity_key, C.c.value, C.c.user_id, C.c.deprovision).order_by(
                    C.c.seq
                )
            )
        ]
    return [tuple(e) for e in entries], log


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bulk_rebuild_equals_per_user(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    def url(name: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / name}"
        return str(request.getfixturevalue("pg_server").create_database())

    reference, bulk = Database(url("ref.db")), Database(url("bulk.db"))
    try:
        enforcement = _build(reference, tmp_path)
        _build(bulk, tmp_path)
        assert _state(reference) == _state(bulk)
        with reference.write() as conn:
            want = per_user_rebuild(conn, enforcement.entries)
        with bulk.write() as conn:
            got = rebuild_all(conn, enforcement.entries, batch=5)
        strip = [(c.identity_key, c.value, c.user_id, c.deprovision) for c in want]
        assert [(c.identity_key, c.value, c.user_id, c.deprovision) for c in got] == strip
        # The fixture exercises every kind of change.
        assert {c.value is None for c in want} == {True, False}
        assert any(c.deprovision and c.value is not None for c in want)
        assert len({c.seq for c in got}) == len(got)
        assert [c.seq for c in got] == sorted(c.seq for c in got)
        assert _state(bulk) == _state(reference)
        # And a second run changes nothing, either way.
        with bulk.write() as conn:
            assert rebuild_all(conn, enforcement.entries) == []
        with reference.write() as conn:
            assert per_user_rebuild(conn, enforcement.entries) == []
    finally:
        reference.dispose()
        bulk.dispose()
