"""How fast the console's reads are at 100k people (SQLite): search, paging, the counts on
the overview, one person's page, a group's page.

    .venv/bin/python -m bench.console_scale [--people 100000]

Rows are inserted with plain SQL (the SCIM path is benchmarked elsewhere); each read is
timed over a few runs and the median printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scimgate.app import console_views as views
from scimgate.store import console_reads, migrate, tables
from scimgate.store.db import Database, now_iso


def seed(db: Database, people: int) -> tuple[str, str]:
    now = now_iso()
    gid = str(uuid.uuid4())
    first = ""
    with db.write() as conn:
        conn.execute(tables.groups.insert().values(
            id=gid, display_name="Engineering", display_name_lower="engineering",
            external_id=None, attrs={}, version=1, created=now, last_modified=now,
        ))  # fmt: skip
        for start in range(0, people, 5000):
            rows, members = [], []
            for i in range(start, min(start + 5000, people)):
                uid = str(uuid.uuid4())
                first = first or uid
                name = f"user{i:06d}@example.com"
                rows.append({
                    "id": uid, "user_name": name, "user_name_lower": name, "external_id": None,
                    "active": True, "display_name": None, "attrs": {}, "version": 1,
                    "created": now, "last_modified": now,
                })  # fmt: skip
                if i % 2 == 0:
                    members.append({"group_id": gid, "member_id": uid, "member_type": "User"})
            conn.execute(tables.users.insert(), rows)
            conn.execute(tables.members.insert(), members)
    return first, gid


def page_only(db: Database, query: str, after: str) -> Any:
    with db.read() as conn:
        return console_reads.page_people(conn, query, after, views.PAGE)


def timed(fn: Callable[[], Any], runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(samples), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'scale.db'}")
        migrate.upgrade(db)
        uid, gid = seed(db, args.people)
        results = {
            "people": args.people,
            "search_prefix_ms": timed(lambda: views.people(db, "user0500", "")),
            "search_only_ms": timed(lambda: page_only(db, "user0500", "")),
            "deep_page_only_ms": timed(lambda: page_only(db, "", "user090000@example.com")),
            "first_page_ms": timed(lambda: views.people(db, "", "")),
            "deep_page_ms": timed(lambda: views.people(db, "", "user090000@example.com")),
            "no_match_ms": timed(lambda: views.people(db, "zzz", "")),
            "counts_ms": timed(lambda: views.people_counts(db)),
            "person_page_ms": timed(lambda: views.person_view(db, None, uid)),
            "groups_page_ms": timed(lambda: views.groups(db, "", "")),
            "group_page_ms": timed(lambda: views.group_view(db, None, gid, "")),
        }
        print(json.dumps(results, indent=2))
        db.dispose()


if __name__ == "__main__":
    main()
