"""`scimgate report access`: per route, who can reach it and through which group, now and at a
past moment rebuilt from the audit trail; json, csv and md. Real SCIM writes on the shared
real server (SQLite and PostgreSQL); the report runs from an instance config of its own that
points at the same database and adds a policy naming this test's groups."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from scimgate.cli import main as cli_main
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair
from tests.fixtures.server import ScimServer
from tests.support.scim import GROUP_SCHEMA as GROUP, PATCH_SCHEMA as PATCH, USER_SCHEMA as USER

COLUMNS = ["route", "path_prefix", "kind", "user_id", "user_name", "via", "requires_scopes"]


def scimgate(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*args, "--dir", str(directory)]
    res = CliRunner().invoke(cli_main, argv)
    return subprocess.CompletedProcess(argv, res.exit_code, res.stdout, res.stderr)


def now_iso() -> str:
    time.sleep(0.002)  # strictly between the writes before and after
    t = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.002)
    return t


@dataclass
class World:
    directory: Path  # the report's instance dir: same database, plus a policy
    tag: str
    admins: str  # IdP group names this policy maps
    eng_ext: str
    users: dict[str, str]  # short name -> SCIM id
    names: dict[str, str]  # short name -> userName
    t_before: str  # before any of the writes below
    t_mid: str  # after setup, before the changes


def patch(scim: httpx.Client, path: str, *ops: dict[str, Any]) -> None:
    r = scim.patch(path, json={"schemas": [PATCH], "Operations": list(ops)})
    assert r.status_code in (200, 204), r.text


@pytest.fixture(scope="module")
def world(scim_server: ScimServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    t = uuid.uuid4().hex[:8]
    admins, eng_ext = f"Admins-{t}", f"eng-{t}"
    directory = tmp_path_factory.mktemp("report")
    (directory / "keys").mkdir()
    (directory / "keys" / "jwt.pub.pem").write_text(generate_rsa_keypair(1024)[1])
    policy = demo_policy_yaml().replace('["Admins"]', f'["{admins}"]')
    (directory / "policy.yaml").write_text(policy.replace('["Engineering"]', f'["{eng_ext}"]'))
    (directory / "scimgate.yaml").write_text(
        f"database_url: '{scim_server.database_url}'\npolicy_file: policy.yaml\n"
    )
    names = {k: f"{k}-{t}@example.com" for k in ("ann", "ben", "cat", "dan", "eve")}
    users: dict[str, str] = {}
    t_before = now_iso()
    with scim_server.client() as scim:

        def create(k: str) -> None:
            r = scim.post("/Users", json={"schemas": [USER], "userName": names[k]})
            assert r.status_code == 201, r.text
            users[k] = r.json()["id"]

        for k in ("ann", "ben", "cat", "dan"):
            create(k)
        r = scim.post(
            "/Groups",
            json={
                "schemas": [GROUP],
                "displayName": admins,
                "members": [{"value": users["ann"]}],
            },
        )
        assert r.status_code == 201, r.text
        gid = r.json()["id"]
        patch(
            scim,
            f"/Groups/{gid}",
            {"op": "add", "path": "members", "value": [{"value": users["ben"]}]},
        )
        # Matched through its externalId, not its display name.
        r = scim.post(
            "/Groups",
            json={
                "schemas": [GROUP],
                "displayName": f"Engineering team {t}",
                "externalId": eng_ext,
                "members": [{"value": users["dan"]}],
            },
        )
        assert r.status_code == 201, r.text
        t_mid = now_iso()
        # After t_mid: ben leaves Admins, cat is deactivated, eve arrives, dan is deleted.
        patch(
            scim, f"/Groups/{gid}", {"op": "remove", "path": f'members[value eq "{users["ben"]}"]'}
        )
        patch(scim, f"/Users/{users['cat']}", {"op": "replace", "value": {"active": False}})
        create("eve")
        assert scim.delete(f"/Users/{users['dan']}").status_code == 204
    yield World(directory, t, admins, eng_ext, users, names, t_before, t_mid)


def report(w: World, *args: str) -> list[dict[str, Any]]:
    p = scimgate(w.directory, "report", "access", "--format", "json", *args)
    assert p.returncode == 0, p.stdout + p.stderr
    return list(json.loads(p.stdout))


def mine(w: World, rows: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(route, short user name, via) for this test's users (the shared store has others)."""
    short = {uid: k for k, uid in w.users.items()}
    return {(r["route"], short[r["user_id"]], r["via"]) for r in rows if r["user_id"] in short}


def test_report_now(world: World) -> None:
    rows = report(world)
    assert all(list(r) == COLUMNS for r in rows)
    assert mine(world, rows) == {
        ("admin", "ann", f"{world.admins} → admins"),
        ("home", "ann", "any active user"),
        ("home", "ben", "any active user"),
        ("home", "eve", "any active user"),
    }
    ann = next(r for r in rows if r["user_id"] == world.users["ann"] and r["route"] == "admin")
    assert ann["path_prefix"] == "/admin" and ann["user_name"] == world.names["ann"]
    assert ann["requires_scopes"] == ""


def test_report_at_a_past_moment(world: World) -> None:
    at_mid = report(world, "--at", world.t_mid)
    assert mine(world, at_mid) == {
        ("admin", "ann", f"{world.admins} → admins"),
        ("admin", "ben", f"{world.admins} → admins"),  # removed from Admins only after t_mid
        ("eng", "dan", f"Engineering team {world.tag} → engineering"),
        ("home", "ann", "any active user"),
        ("home", "ben", "any active user"),
        ("home", "cat", "any active user"),  # deactivated only after t_mid
        ("home", "dan", "any active user"),  # deleted only after t_mid
    }
    # The same moment written with another offset is the same moment.
    mid = datetime.strptime(world.t_mid, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    plus2 = mid.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert report(world, "--at", plus2) == at_mid
    # Before any of these writes none of these users existed.
    assert mine(world, report(world, "--at", world.t_before)) == set()


def test_replay_to_now_matches_the_store(world: World) -> None:
    """The trail replayed to now and the resource tables agree on the whole shared store."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert report(world, "--at", future) == report(world)


def test_csv_and_md_formats(world: World) -> None:
    rows = report(world)
    p = scimgate(world.directory, "report", "access", "--format", "csv")
    assert p.returncode == 0, p.stderr
    parsed = list(csv.DictReader(io.StringIO(p.stdout)))
    assert list(parsed[0]) == COLUMNS
    assert parsed == [{k: str(v) for k, v in r.items()} for r in rows]

    p = scimgate(world.directory, "report", "access", "--format", "md", "--at", world.t_mid)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "| route | path | kind | who | via | scopes |"
    assert lines[1] == "|---|---|---|---|---|---|"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert all(len(c) == 6 for c in cells)
    assert len(cells) == len(report(world, "--at", world.t_mid))
    row = ["admin", "`/admin`", "user", world.names["ben"], f"{world.admins} → admins", "-"]
    assert row in cells


def test_report_needs_a_policy_and_a_valid_time(world: World, scim_server: ScimServer) -> None:
    p = scimgate(scim_server.directory, "report", "access")
    assert p.returncode == 1 and "no policy_file" in p.stderr
    p = scimgate(world.directory, "report", "access", "--at", "yesterday")
    assert p.returncode == 2 and "not an ISO 8601 time" in p.stderr
