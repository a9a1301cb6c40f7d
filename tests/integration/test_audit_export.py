"""`scimgate audit export`: jsonl and csv, --since/--until (inclusive, any ISO 8601 offset),
and the exported events re-verify on their own with ``audit.chain.first_broken``. Real SCIM
writes on the shared real server (SQLite and PostgreSQL); the database is read with
SQLAlchemy to know exactly which events to expect."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from scimgate.audit.chain import HASHED_FIELDS, first_broken
from scimgate.cli import main as cli_main
from scimgate.store import tables
from tests.fixtures.server import ScimServer, scimgate_cmd
from tests.support.scim import GROUP_SCHEMA as GROUP, PATCH_SCHEMA as PATCH, USER_SCHEMA as USER

E = tables.audit_events
COLUMNS = [*HASHED_FIELDS, "prev_hash", "hash"]


def export(
    directory: Path, *args: str, real_process: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = ["audit", "export", *args, "--dir", str(directory)]
    if real_process:
        return subprocess.run(scimgate_cmd(*argv), capture_output=True, text=True, timeout=60)
    res = CliRunner().invoke(cli_main, argv)
    return subprocess.CompletedProcess(argv, res.exit_code, res.stdout, res.stderr)


def jsonl(directory: Path, *args: str, **kw: Any) -> list[dict[str, Any]]:
    p = export(directory, "--format", "jsonl", *args, **kw)
    assert p.returncode == 0, p.stdout + p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def from_csv(text: str) -> list[dict[str, Any]]:
    """CSV cells back to event fields: seq is an integer, detail is JSON, empty is null."""
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        assert list(row) == COLUMNS
        ev: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
        ev["seq"] = int(row["seq"])
        ev["detail"] = json.loads(row["detail"])
        out.append(ev)
    return out


def db_events(url: str, after_seq: int) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            q = sa.select(E).where(E.c.seq > after_seq).order_by(E.c.seq)
            return [dict(r) for r in conn.execute(q).mappings()]
    finally:
        engine.dispose()


def head_seq(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(tables.audit_head.c.seq)).scalar_one())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def written(scim_server: ScimServer) -> list[dict[str, Any]]:
    """Six audited writes of our own (with a non-ASCII name); returns their events."""
    start = head_seq(scim_server.database_url)
    t = uuid.uuid4().hex[:8]
    with scim_server.client() as scim:
        r = scim.post(
            "/Users",
            json={"schemas": [USER], "userName": f"exp-{t}@example.com", "displayName": "Zoë Ø"},
        )
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        r = scim.post("/Groups", json={"schemas": [GROUP], "displayName": f"exp-{t}"})
        assert r.status_code == 201, r.text
        gid = r.json()["id"]
        for ops in (
            [{"op": "add", "path": "members", "value": [{"value": uid}]}],
            [{"op": "replace", "path": "displayName", "value": f"exp-{t}-renamed"}],
        ):
            r = scim.patch(f"/Groups/{gid}", json={"schemas": [PATCH], "Operations": ops})
            assert r.status_code == 204, r.text
        r = scim.patch(
            f"/Users/{uid}",
            json={
                "schemas": [PATCH],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            },
        )
        assert r.status_code == 200, r.text
        assert scim.delete(f"/Groups/{gid}").status_code == 204
    # The server's own threads may append events meanwhile (sync batches, the failed-auth
    # summary): the window is from our first event to our last, whatever lies between.
    everything = db_events(scim_server.database_url, start)
    ours = [i for i, e in enumerate(everything) if e["resource_type"] is not None]
    events = everything[ours[0] : ours[-1] + 1]
    assert [(e["resource_type"], e["operation"]) for e in events if e["resource_type"]] == [
        ("User", "create"),
        ("Group", "create"),
        ("Group", "patch"),
        ("Group", "patch"),
        ("User", "patch"),
        ("Group", "delete"),
    ]
    return events


def test_jsonl_window_is_inclusive_and_exact(
    scim_server: ScimServer, written: list[dict[str, Any]]
) -> None:
    d = scim_server.directory
    first, last = written[0]["ts"], written[-1]["ts"]
    got = jsonl(d, "--since", first, "--until", last, real_process=True)
    assert got == written  # every column, hashes included, nothing else in the window
    assert first_broken(got, got[0]["prev_hash"]) is None

    # A window in the middle, written with a +05:30 offset, is the same instants.
    def shifted(ts: str) -> str:
        dt = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        return dt.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()

    middle = jsonl(d, "--since", shifted(written[2]["ts"]), "--until", shifted(written[4]["ts"]))
    assert middle == written[2:5]
    assert first_broken(middle, middle[0]["prev_hash"]) is None
    assert jsonl(d, "--since", written[3]["ts"])[: len(written) - 3] == written[3:]
    until_last = jsonl(d, "--until", last)
    assert until_last[-len(written) :] == written
    assert first_broken(until_last) is None  # from the first event: a chain from genesis
    # Date-only bounds are midnight UTC.
    assert jsonl(d, "--until", "2000-01-01") == []


def test_csv_round_trips_and_re_verifies(
    scim_server: ScimServer, written: list[dict[str, Any]]
) -> None:
    d = scim_server.directory
    p = export(d, "--format", "csv", "--since", written[0]["ts"], "--until", written[-1]["ts"])
    assert p.returncode == 0, p.stderr
    events = from_csv(p.stdout)
    assert events == written
    assert first_broken(events, events[0]["prev_hash"]) is None
    assert "Zoë Ø" in p.stdout  # UTF-8, not \u escapes


def test_exported_events_reveal_tampering(
    scim_server: ScimServer, written: list[dict[str, Any]]
) -> None:
    events = jsonl(scim_server.directory, "--since", written[0]["ts"], "--until", written[-1]["ts"])
    start = events[0]["prev_hash"]
    edited = [dict(e) for e in events]
    edited[1]["actor"] = "someone-else"
    assert first_broken(edited, start) == 1
    assert first_broken(events[:2] + events[3:], start) == 2  # one left out
    assert first_broken(events[1:], start) == 0  # does not start where it claims


def test_export_rejects_a_bad_time(scim_server: ScimServer) -> None:
    p = export(scim_server.directory, "--since", "last tuesday")
    assert p.returncode == 2 and "not an ISO 8601 time" in p.stderr
