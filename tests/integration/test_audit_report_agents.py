"""`scimgate report access` with agents and open routes: agents reach a route through
``allow_agents`` (a policy group of their IdP groups, or their ``agentType``) and are told
apart by the ``kind`` column; a suspended (owners gone, or its parent out) or inactive agent has no row; public
and source-limited routes are listed as such. Now and at a past moment rebuilt from the
audit trail, on the shared real server (SQLite and PostgreSQL) through real SCIM writes."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scimgate.cli import main as cli_main
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair
from tests.fixtures.server import ScimServer
from tests.support.scim import GROUP_SCHEMA as GROUP, PATCH_SCHEMA as PATCH, USER_SCHEMA as USER

AGENT = "urn:ietf:params:scim:schemas:core:2.0:Agent"
COLUMNS = ["route", "path_prefix", "kind", "user_id", "user_name", "via", "requires_scopes"]


def now_iso() -> str:
    time.sleep(0.002)  # strictly between the writes before and after
    t = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.002)
    return t


@dataclass
class World:
    directory: Path
    tag: str
    ids: dict[str, str]  # short name -> SCIM id (agents and the owner)
    t_mid: str


@pytest.fixture(scope="module")
def world(scim_server: ScimServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    t = uuid.uuid4().hex[:8]
    automation, kind = f"Automation-{t}", f"tool-{t}"
    directory = tmp_path_factory.mktemp("report-agents")
    (directory / "keys").mkdir()
    (directory / "keys" / "jwt.pub.pem").write_text(generate_rsa_keypair(1024)[1])
    policy = demo_policy_yaml(agents=True).replace('["Automation"]', f'["{automation}"]')
    extra = (
        '  - name: tools\n    from: {hosts: ["*"], path_prefix: /tools}\n'
        f'    allow_agents: {{types: [{kind}]}}\n    to: {{return: "tools"}}\n'
        '  - name: internal\n    from: {hosts: ["*"], path_prefix: /internal}\n'
        '    allow_sources: [10.0.0.0/8, 192.168.0.0/16]\n    to: {return: "internal"}\n'
    )
    policy = policy.replace("  - name: admin\n", extra + "  - name: admin\n", 1)
    (directory / "policy.yaml").write_text(policy)
    (directory / "scimgate.yaml").write_text(
        f"database_url: '{scim_server.database_url}'\npolicy_file: policy.yaml\n"
    )
    ids: dict[str, str] = {}
    with scim_server.client() as scim:
        r = scim.post("/Users", json={"schemas": [USER], "userName": f"owner-{t}@example.com"})
        assert r.status_code == 201, r.text
        ids["owner"] = r.json()["id"]

        def agent(short: str, **extra: Any) -> None:
            body = {"schemas": [AGENT], "name": f"{short}-{t}", **extra}
            r = scim.post("/Agents", json=body)
            assert r.status_code == 201, r.text
            ids[short] = r.json()["id"]

        owned = [{"value": ids["owner"]}]
        agent("typed", agentType=kind.upper(), owners=owned)  # types match case-insensitively
        agent("grouped")
        agent("idle", active=False)
        agent("owned", owners=owned)
        agent("kid", parent={"value": ids["typed"]})  # stands and falls with "typed"
        members = [{"value": ids[k]} for k in ("grouped", "idle", "owned", "kid")]
        r = scim.post(
            "/Groups", json={"schemas": [GROUP], "displayName": automation, "members": members}
        )
        assert r.status_code == 201, r.text
        t_mid = now_iso()
        # After t_mid: the owner leaves (both owned agents are suspended, and "kid" with its
        # parent), "grouped" is deleted, "late" arrives with the tool type.
        r = scim.patch(
            f"/Users/{ids['owner']}",
            json={"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active",
                                                      "value": False}]},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        assert scim.delete(f"/Agents/{ids['grouped']}").status_code == 204
        agent("late", agentType=kind)
    yield World(directory, t, ids, t_mid)


def report(w: World, *args: str) -> list[dict[str, Any]]:
    res = CliRunner().invoke(
        cli_main, ["report", "access", "--dir", str(w.directory), "--format", "json", *args]
    )
    assert res.exit_code == 0, res.output
    return list(json.loads(res.stdout))


def mine(w: World, rows: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """(route, kind, short name, via) for this test's identities and for open routes."""
    short = {i: k for k, i in w.ids.items()}
    return {
        (r["route"], r["kind"], short.get(r["user_id"], r["user_name"]), r["via"])
        for r in rows
        if r["user_id"] in short or r["kind"] in ("public", "sources")
    }


OPEN = {
    ("health", "public", "anyone", "public: true"),
    ("internal", "sources", "from 10.0.0.0/8, 192.168.0.0/16", "allow_sources"),
}


def test_agents_now(world: World) -> None:
    rows = report(world)
    assert all(list(r) == COLUMNS for r in rows)
    kind = f"tool-{world.tag}"
    # The owner is inactive: no user row; both of its agents are suspended, and "kid" whose
    # parent is one of them; "idle" is inactive; "grouped" is deleted.
    assert mine(world, rows) == OPEN | {
        ("tools", "agent", "late", f"agentType {kind} → at-{kind}"),
    }
    late = next(r for r in rows if r["user_id"] == world.ids["late"])
    assert late["user_name"] == f"late-{world.tag}" and late["path_prefix"] == "/tools"


def test_agents_at_a_past_moment(world: World) -> None:
    automation, kind = f"Automation-{world.tag}", f"tool-{world.tag}"
    assert mine(world, report(world, "--at", world.t_mid)) == OPEN | {
        ("tools", "agent", "typed", f"agentType {kind.upper()} → at-{kind}"),
        ("api", "agent", "grouped", f"{automation} → automation"),
        ("api", "agent", "owned", f"{automation} → automation"),
        ("api", "agent", "kid", f"{automation} → automation"),
        ("home", "user", "owner", "any active user"),
    }


def test_replay_of_agents_matches_the_store(world: World) -> None:
    """Agents, owners and memberships replayed to now agree with the resource tables."""
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert report(world, "--at", future) == report(world)


def test_markdown_shows_the_kind(world: World) -> None:
    res = CliRunner().invoke(
        cli_main, ["report", "access", "--dir", str(world.directory), "--at", world.t_mid]
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "| route | path | kind | who | via | scopes |"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert ["health", "`/healthz`", "public", "anyone", "public: true", "-"] in cells
    row = ["api", "`/api`", "agent", f"grouped-{world.tag}",
           f"Automation-{world.tag} → automation", "-"]  # fmt: skip
    assert row in cells
