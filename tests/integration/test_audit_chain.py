"""The hash-chained audit trail: `scimgate audit verify` on a real instance (SQLite and
PostgreSQL) fed by real SCIM writes, then tampered with directly in the database; plus unit
tests of the pure chain (``audit.chain.first_broken``) and the replay (``audit.replay``)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from scimgate.audit.chain import GENESIS_HASH, event_hash, first_broken
from scimgate.audit.log import verify
from scimgate.audit.replay import replay
from scimgate.cli import main as cli_main
from scimgate.config import default_sqlite_url
from scimgate.store import tables
from tests.fixtures.server import ScimServer, scimgate_cmd, start_server
from tests.support.scim import GROUP_SCHEMA as GROUP, PATCH_SCHEMA as PATCH, USER_SCHEMA as USER

E = tables.audit_events


# --- unit: the pure chain ---------------------------------------------------------------


def make_chain(n: int, start_hash: str = GENESIS_HASH, first_seq: int = 1) -> list[dict[str, Any]]:
    events, prev = [], start_hash
    for i in range(n):
        ev: dict[str, Any] = {
            "seq": first_seq + i,
            "ts": f"2026-01-01T00:00:{i:02d}.000000Z",
            "kind": "scim.write",
            "actor": "okta",
            "client": "10.0.0.1",
            "user_agent": "Okta SCIM Client 1.0.0",
            "request_id": f"r{i}",
            "resource_type": "User",
            "resource_id": f"u{i}",
            "operation": "create",
            "detail": {"resource": {"userName": f"ü{i}@example.com"}},
        }
        ev["prev_hash"] = prev
        ev["hash"] = prev = event_hash(prev, ev)
        events.append(ev)
    return events


def test_first_broken_intact_and_empty() -> None:
    assert first_broken([]) is None
    assert first_broken(make_chain(5)) is None


def test_first_broken_every_hashed_field_matters() -> None:
    changes: dict[str, Any] = {
        "ts": "2027-01-01T00:00:00.000000Z",
        "kind": "auth.failed",
        "actor": "mallory",
        "client": "6.6.6.6",
        "user_agent": "x",
        "request_id": "other",
        "resource_type": "Group",
        "resource_id": "someone-else",
        "operation": "delete",
        "detail": {"resource": {}},
    }
    for field, value in changes.items():
        chain = make_chain(5)
        chain[2][field] = value
        assert first_broken(chain) == 2, field


def test_first_broken_detects_deletion_reorder_and_relinking() -> None:
    chain = make_chain(6)
    assert first_broken(chain[:2] + chain[3:]) == 2  # middle event deleted
    assert first_broken([chain[0], chain[2], chain[1], *chain[3:]]) == 1  # reordered
    # Deleting the newest event is invisible to the pure chain (verify checks the head).
    assert first_broken(chain[:-1]) is None
    # Swapping seq values but keeping the content in place breaks the hash of both.
    swapped = [dict(e) for e in chain]
    swapped[1]["seq"], swapped[3]["seq"] = swapped[3]["seq"], swapped[1]["seq"]
    assert first_broken(swapped) == 1
    # Re-hashing a forged event does not help: the next event's prev_hash still points back.
    forged = [dict(e) for e in chain]
    forged[2]["detail"] = {"resource": {"userName": "forged"}}
    forged[2]["hash"] = event_hash(forged[2]["prev_hash"], forged[2])
    assert first_broken(forged) == 3


def test_first_broken_on_a_slice_needs_the_slice_start_hash() -> None:
    chain = make_chain(8)
    part = chain[3:6]
    assert first_broken(part, part[0]["prev_hash"]) is None
    assert first_broken(part) == 0  # not a chain from genesis
    assert first_broken(make_chain(3, start_hash="f" * 64, first_seq=40), "f" * 64) is None


# --- unit: replay ---------------------------------------------------------------------------


def ev(
    seq: int, rtype: str, rid: str, op: str, detail: dict[str, Any], kind: str = "scim.write"
) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": f"2026-01-01T00:00:{seq:02d}.000000Z",
        "kind": kind,
        "resource_type": rtype,
        "resource_id": rid,
        "operation": op,
        "detail": detail,
    }


def t(seq: int) -> str:
    return f"2026-01-01T00:00:{seq:02d}.000000Z"


REPLAY_EVENTS = [
    ev(
        1,
        "User",
        "u1",
        "create",
        {"resource": {"userName": "alice", "active": True, "emails": [{"value": "a@x.org"}]}},
    ),
    ev(2, "User", "u2", "create", {"resource": {"userName": "bob", "active": "False"}}),
    ev(
        3,
        "Group",
        "g1",
        "create",
        {"resource": {"displayName": "Admins", "externalId": "ext-1", "members": ["u1"]}},
    ),
    ev(4, "Group", "g1", "patch", {"changed": {}, "members_added": ["u2"], "members_removed": []}),
    ev(5, None, None, None, {"name": "okta"}, kind="token.created"),  # type: ignore[arg-type]
    ev(
        6,
        "Group",
        "g1",
        "patch",
        {
            "changed": {"displayName": ["Admins", "Root"]},
            "members_added": [],
            "members_removed": ["u1"],
        },
    ),
    ev(
        7,
        "User",
        "u1",
        "patch",
        {
            "changed": {
                "active": [True, False],
                "userName": ["alice", "alice2"],
                "emails": [[{"value": "a@x.org"}], [{"value": "b@x.org"}]],
            }
        },
    ),
    ev(8, "User", "u2", "delete", {"userName": "bob", "removed_from_groups": ["g1"]}),
    ev(9, "Group", "g1", "delete", {"displayName": "Root", "members": 0}),
]


def test_replay_at_each_moment() -> None:
    s = replay(REPLAY_EVENTS, until=t(3))
    assert {u.user_name for u in s.users.values()} == {"alice", "bob"}
    assert s.users["u2"].active is False  # Entra-style "False" string
    assert s.users["u1"].emails == ["a@x.org"]
    assert s.groups["g1"].members == {"u1"} and s.groups["g1"].external_id == "ext-1"
    assert [g.display_name for g in s.groups_of("u1")] == ["Admins"]

    s = replay(REPLAY_EVENTS, until=t(5))
    assert s.groups["g1"].members == {"u1", "u2"}

    s = replay(REPLAY_EVENTS, until=t(6))
    assert s.groups["g1"].members == {"u2"} and s.groups["g1"].display_name == "Root"
    assert s.groups_of("u1") == []

    s = replay(REPLAY_EVENTS, until=t(7))
    assert (s.users["u1"].user_name, s.users["u1"].active) == ("alice2", False)
    assert s.users["u1"].emails == ["b@x.org"]

    s = replay(REPLAY_EVENTS, until=t(8))
    assert "u2" not in s.users and s.groups["g1"].members == set()

    s = replay(REPLAY_EVENTS)
    assert s.groups == {} and list(s.users) == ["u1"]
    assert replay(REPLAY_EVENTS, until="2025-12-31T00:00:00.000000Z").users == {}


def test_replay_ignores_other_kinds_and_unknown_ids() -> None:
    events = [
        ev(1, "User", "u9", "patch", {"changed": {"active": [True, False]}}),  # never created
        ev(2, "User", "u1", "create", {"resource": {"userName": "x"}}, kind="auth.failed"),
        ev(3, "Group", "g9", "patch", {"members_added": ["u1"]}),
    ]
    s = replay(events)
    assert s.users == {} and s.groups == {}


# --- integration: `scimgate audit verify` on a real instance ------------------------------


@pytest.fixture(scope="module")
def chain_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScimServer]:
    """An instance of our own (we tamper with its database), with real SCIM writes in it."""
    directory = tmp_path_factory.mktemp(f"audit-chain-{backend}")
    url = (
        default_sqlite_url(directory)
        if backend == "sqlite"
        else request.getfixturevalue("pg_server").create_database()
    )
    # Failed authentications are audited per source and window, by a flush once the window
    # closes (issue 8): a 1 s window, so the fixture can wait for the 401's event below.
    server = start_server(directory, url, extra_yaml="auth_failure_window_seconds: 1\n")
    try:
        with server.client() as scim:
            ids = []
            for i in range(4):
                r = scim.post(
                    "/Users",
                    json={
                        "schemas": [USER],
                        "userName": f"chain{i}@example.com",
                        "emails": [{"value": f"chain{i}@example.com"}],
                    },
                )
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            r = scim.post(
                "/Groups",
                json={"schemas": [GROUP], "displayName": "Chain", "members": [{"value": ids[0]}]},
            )
            assert r.status_code == 201, r.text
            gid = r.json()["id"]
            assert (
                scim.patch(
                    f"/Groups/{gid}",
                    json={
                        "schemas": [PATCH],
                        "Operations": [
                            {"op": "add", "path": "members", "value": [{"value": ids[1]}]}
                        ],
                    },
                ).status_code
                == 204
            )
            assert (
                scim.patch(
                    f"/Users/{ids[2]}",
                    json={
                        "schemas": [PATCH],
                        "Operations": [{"op": "replace", "value": {"active": False}}],
                    },
                ).status_code
                == 200
            )
            assert scim.delete(f"/Users/{ids[3]}").status_code == 204
            # A failed authentication is audited too (by the flush, after its window).
            assert (
                httpx.get(
                    server.base_url + "/Users", headers={"Authorization": "Bearer nope"}
                ).status_code
                == 401
            )
        _wait_for_event(url, "auth.failed")
        yield server
    finally:
        server.stop()


def _wait_for_event(url: str, kind: str, timeout: float = 10.0) -> None:
    engine = sa.create_engine(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(sa.select(E.c.seq).where(E.c.kind == kind)).first():
                    return
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError(f"no {kind} event within {timeout} s")


def run_verify(directory: Path, *, in_process: bool = False) -> subprocess.CompletedProcess[str]:
    """`scimgate audit verify --dir DIR` as a real process, or in this process (same code,
    no interpreter start: the tamper cases run it many times on a busy 2-core box)."""
    args = ["audit", "verify", "--dir", str(directory)]
    if in_process:
        res = CliRunner().invoke(cli_main, args)
        return subprocess.CompletedProcess(args, res.exit_code, res.stdout, res.stderr)
    return subprocess.run(scimgate_cmd(*args), capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def engine(chain_server: ScimServer) -> Iterator[sa.Engine]:
    eng = sa.create_engine(chain_server.database_url)
    try:
        yield eng
    finally:
        eng.dispose()


def snapshot(engine: sa.Engine) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(E).order_by(E.c.seq)).mappings()]
        head = dict(conn.execute(sa.select(tables.audit_head)).mappings().one())
    return rows, head


def restore(engine: sa.Engine, rows: list[dict[str, Any]], head: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(E.delete())
        conn.execute(E.insert(), rows)
        conn.execute(tables.audit_head.update().values(seq=head["seq"], hash=head["hash"]))
    with engine.connect() as conn:
        assert verify(conn).ok


def test_verify_ok_after_real_writes(chain_server: ScimServer, engine: sa.Engine) -> None:
    rows, head = snapshot(engine)
    # 1 token + 4 user creates + group create + group patch + user patch + user delete + 401
    assert len(rows) == 10 and head["seq"] == 10 and rows[-1]["hash"] == head["hash"]
    assert [r["seq"] for r in rows] == list(range(1, 11))
    assert first_broken(rows) is None
    writes = [(r["resource_type"], r["operation"]) for r in rows if r["kind"] == "scim.write"]
    assert writes == [("User", "create")] * 4 + [
        ("Group", "create"),
        ("Group", "patch"),
        ("User", "patch"),
        ("User", "delete"),
    ]
    assert rows[-1]["kind"] == "auth.failed" and rows[-1]["actor"] is None
    assert all(r["actor"] == "tests" for r in rows if r["kind"] == "scim.write")

    p = run_verify(chain_server.directory)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"audit chain OK: 10 events, head {head['hash']}"


def _change_detail(conn: sa.Connection) -> int:
    row = conn.execute(sa.select(E.c.detail).where(E.c.seq == 4)).one()
    detail = dict(row.detail)
    detail["resource"] = {**detail["resource"], "userName": "someone-else@example.com"}
    conn.execute(E.update().where(E.c.seq == 4).values(detail=detail))
    return 4


def _delete_middle(conn: sa.Connection) -> int:
    conn.execute(E.delete().where(E.c.seq == 6))
    return 6


def _delete_newest(conn: sa.Connection) -> int:
    conn.execute(E.delete().where(E.c.seq == 10))
    return 10


def _swap_seq(conn: sa.Connection) -> int:
    conn.execute(E.update().where(E.c.seq == 3).values(seq=-1))
    conn.execute(E.update().where(E.c.seq == 7).values(seq=3))
    conn.execute(E.update().where(E.c.seq == -1).values(seq=7))
    return 3


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_change_detail, "hash mismatch"),
        (_delete_middle, "missing or reordered event"),
        (_delete_newest, "events after the last one present were deleted"),
        (_swap_seq, "hash mismatch"),
    ],
    ids=["detail-changed", "middle-deleted", "newest-deleted", "seq-swapped"],
)
def test_verify_names_the_first_broken_event(
    chain_server: ScimServer,
    engine: sa.Engine,
    tamper: Callable[[sa.Connection], int],
    reason: str,
) -> None:
    rows, head = snapshot(engine)
    try:
        with engine.begin() as conn:
            broken = tamper(conn)
        # One case as a real process (exit status 1), the others in-process.
        p = run_verify(chain_server.directory, in_process=tamper is not _change_detail)
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stdout == ""
        assert f"audit chain BROKEN at event {broken}: {reason}" in p.stderr
        assert f"({broken - 1} events verified before it)" in p.stderr
    finally:
        restore(engine, rows, head)


def test_verify_catches_a_forged_but_rehashed_event(
    chain_server: ScimServer, engine: sa.Engine
) -> None:
    """An attacker who recomputes the edited event's own hash still breaks the next link."""
    rows, head = snapshot(engine)
    try:
        with engine.begin() as conn:
            row = dict(conn.execute(sa.select(E).where(E.c.seq == 5)).mappings().one())
            row["detail"] = {**row["detail"], "resource": {"userName": str(uuid.uuid4())}}
            conn.execute(
                E.update()
                .where(E.c.seq == 5)
                .values(detail=row["detail"], hash=event_hash(row["prev_hash"], row))
            )
        p = run_verify(chain_server.directory, in_process=True)
        assert p.returncode == 1
        assert "BROKEN at event 6: hash mismatch" in p.stderr
    finally:
        restore(engine, rows, head)
