"""The console's paged reads on SQLite and PostgreSQL: prefix search (with LIKE's special
characters in names), keyset paging that neither skips nor repeats, member pages by the
membership key, the counts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scimgate.store import console_reads as reads, migrate, tables
from scimgate.store.db import Database, now_iso

NAMES = [f"user{i:03d}@example.com" for i in range(120)] + [
    "a_b@example.com", "axb@example.com", "a%c@example.com", "azz@example.com",
]  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'r.db'}"
    else:
        url = request.getfixturevalue("pg_db_url")
    database = Database(url)
    migrate.upgrade(database)
    now = now_iso()
    with database.write() as conn:
        conn.execute(tables.groups.insert().values(
            id="g1", display_name="Big_Group", display_name_lower="big_group", external_id=None,
            attrs={}, version=1, created=now, last_modified=now,
        ))  # fmt: skip
        users = [
            {"id": str(uuid.uuid4()), "user_name": n, "user_name_lower": n, "external_id": None,
             "active": i % 3 != 0, "display_name": None, "attrs": {}, "version": 1,
             "created": now, "last_modified": now}
            for i, n in enumerate(NAMES)
        ]  # fmt: skip
        conn.execute(tables.users.insert(), users)
        conn.execute(
            tables.members.insert(),
            [{"group_id": "g1", "member_id": u["id"], "member_type": "User"} for u in users[:110]],
        )
    yield database
    database.dispose()


def test_prefix_search_treats_like_characters_literally(db: Database) -> None:
    with db.read() as conn:
        assert [p.user_name for p in reads.page_people(conn, "a_", "", 50)] == ["a_b@example.com"]
        assert [p.user_name for p in reads.page_people(conn, "A%", "", 50)] == ["a%c@example.com"]
        assert len(reads.page_people(conn, "user00", "", 50)) == 10
        assert reads.page_people(conn, "nobody", "", 50) == []
        assert [g.display_name for g in reads.page_groups(conn, "big_", "", 50)] == ["Big_Group"]
        assert reads.page_groups(conn, "bigx", "", 50) == []


def test_keyset_pages_cover_everyone_once(db: Database) -> None:
    seen: list[str] = []
    after = ""
    with db.read() as conn:
        for _ in range(10):
            page = reads.page_people(conn, "", after, 50)
            seen += [p.user_name for p in page]
            if len(page) < 50:
                break
            after = page[-1].user_name
        assert sorted(seen) == sorted(NAMES) and len(seen) == len(set(seen))
        members: list[str] = []
        cursor = ""
        for _ in range(10):
            page, cursor = reads.page_members(conn, "g1", cursor, 50)
            members += [p.id for p in page]
            if not cursor:
                break
        assert len(members) == len(set(members)) == 110
        assert reads.count_people(conn) == (len(NAMES), sum(1 for i in range(len(NAMES)) if i % 3))
        [group] = reads.page_groups(conn, "", "", 50)
        assert group.members == 110


def test_agent_pages_search_and_page_through_equal_names(db: Database) -> None:
    """Agent names are not unique: the keyset is (name, id), so 7 agents called "Bot" split
    over pages of 3 are each shown once; search by name or agentUserName prefix (LIKE's
    characters literally), or exactly by id, subject or externalId."""
    now = now_iso()
    rows = [
        {"id": f"a{i}", "name": "Bot", "name_lower": "bot", "agent_user_name": f"b_{i}",
         "agent_user_name_lower": f"b_{i}", "subject": f"sub-{i}", "external_id": f"x{i}",
         "active": i % 2 == 0, "display_name": None, "attrs": {"agentType": "tool"},
         "version": 1, "created": now, "last_modified": now}
        for i in range(7)
    ] + [
        {"id": "z", "name": "Helper", "name_lower": "helper", "agent_user_name": None,
         "agent_user_name_lower": None, "subject": None, "external_id": None, "active": True,
         "display_name": None, "attrs": {}, "version": 1, "created": now, "last_modified": now}
    ]  # fmt: skip
    with db.write() as conn:
        conn.execute(tables.agents.insert(), rows)
    with db.read() as conn:
        seen: list[str] = []
        after = ""
        for _ in range(10):
            page = reads.page_agents(conn, "", after, 3)
            seen += [a.id for a in page]
            if len(page) < 3:
                break
            after = page[-1].id
        assert seen == [f"a{i}" for i in range(7)] + ["z"]
        assert [a.id for a in reads.page_agents(conn, "HEL", "", 50)] == ["z"]
        assert len(reads.page_agents(conn, "b_", "", 50)) == 7  # agentUserName prefix
        assert reads.page_agents(conn, "b%", "", 50) == []
        assert [a.id for a in reads.page_agents(conn, "sub-3", "", 50)] == ["a3"]
        assert [a.id for a in reads.page_agents(conn, "x5", "", 50)] == ["a5"]
        [first] = reads.page_agents(conn, "a0", "", 50)
        assert (first.name, first.agent_type, first.active) == ("Bot", "tool", True)
        assert reads.count_agents(conn) == (8, 5)
