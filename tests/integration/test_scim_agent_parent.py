"""An agent's ``parent`` (draft-abbey-scim-agent-extension-00 §3.1: a reference to an
Agent), over real HTTP on SQLite and PostgreSQL with the demo policy's agents: it must name
an existing agent, not the agent itself nor one of its descendants (400 invalidValue, RFC
7644 §3.12, nothing committed); ``display`` and ``$ref`` are filled in; a child is
suspended while its parent (up the chain) is inactive, suspended or deleted, and its map
entries follow in the parent's own transaction."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.fixtures.server import ScimServer
from tests.integration.test_audit_story import story
from tests.integration.test_audit_story_agents import join_automation
from tests.support.scim import ERROR_SCHEMA, PATCH_SCHEMA as PATCH, USER_SCHEMA as USER, tag

AGENT = "urn:ietf:params:scim:schemas:core:2.0:Agent"


@pytest.fixture
def scim(agents_server: ScimServer) -> Any:
    with agents_server.client() as client:
        yield client


def _agent(scim: httpx.Client, **extra: Any) -> dict[str, Any]:
    r = scim.post("/Agents", json={"schemas": [AGENT], "name": f"bot-{tag()}", **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _invalid(r: httpx.Response, words: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["schemas"] == [ERROR_SCHEMA] and body["scimType"] == "invalidValue", body
    assert words in body["detail"], body


def _set(scim: httpx.Client, rid: str, path: str, value: Any) -> httpx.Response:
    op = {"op": "replace", "path": path, "value": value}
    return scim.patch(f"/Agents/{rid}", json={"schemas": [PATCH], "Operations": [op]})


def _entries(server: ScimServer, agent_id: str) -> dict[str, str]:
    engine = sa.create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT identity_key, value FROM map_entries WHERE user_id = :a"),
                {"a": agent_id},
            ).all()
    finally:
        engine.dispose()
    return {r[0]: r[1] for r in rows}


def test_parent_must_be_an_existing_agent_and_not_a_cycle(scim: httpx.Client) -> None:
    root = _agent(scim)
    child = _agent(scim, parent={"value": root["id"]})
    assert child["parent"]["display"] == root["name"]  # filled in from the parent
    assert child["parent"]["$ref"].endswith(f"/Agents/{root['id']}")
    grandchild = _agent(scim, parent={"value": child["id"], "display": "kept as sent"})
    assert grandchild["parent"]["display"] == "kept as sent"
    count = scim.get("/Agents", params={"count": 0}).json()["totalResults"]

    # unknown id, or no value: 400 on create, nothing stored
    _invalid(scim.post("/Agents", json={"name": f"x-{tag()}", "parent": {"value": "ghost"}}),
             "no Agent has id 'ghost'")  # fmt: skip
    _invalid(scim.post("/Agents", json={"name": f"x-{tag()}", "parent": {"display": "x"}}),
             "needs a value")  # fmt: skip
    # a user's id is no agent
    user = scim.post("/Users", json={"schemas": [USER], "userName": f"u-{tag()}@example.com"})
    _invalid(scim.post("/Agents", json={"name": f"x-{tag()}",
                                        "parent": {"value": user.json()["id"]}}),
             "no Agent has id")  # fmt: skip
    assert scim.get("/Agents", params={"count": 0}).json()["totalResults"] == count

    # itself, or a descendant (root → child → grandchild → root would be a cycle)
    _invalid(_set(scim, root["id"], "parent", {"value": root["id"]}), "its own parent")
    _invalid(_set(scim, root["id"], "parent", {"value": grandchild["id"]}), "a cycle")
    put = {k: v for k, v in child.items() if k not in ("meta", "id")}
    put["parent"] = {"value": grandchild["id"]}
    _invalid(scim.put(f"/Agents/{child['id']}", json=put), "a cycle")
    # the refused writes changed nothing
    assert "parent" not in scim.get(f"/Agents/{root['id']}").json()
    assert scim.get(f"/Agents/{child['id']}").json()["parent"]["value"] == root["id"]
    # a sibling as the new parent is fine; removing the parent is fine
    sibling = _agent(scim, parent={"value": root["id"]})
    moved = _set(scim, grandchild["id"], "parent", {"value": sibling["id"]})
    assert moved.status_code == 200 and moved.json()["parent"]["value"] == sibling["id"]
    r = scim.patch(f"/Agents/{grandchild['id']}",
                   json={"schemas": [PATCH], "Operations": [{"op": "remove", "path": "parent"}]})  # fmt: skip
    assert r.status_code == 200 and "parent" not in r.json()


def test_a_child_stands_and_falls_with_its_parent(
    scim: httpx.Client, agents_server: ScimServer
) -> None:
    root = _agent(scim, subject=f"root-{tag()}")
    child = _agent(scim, subject=f"child-{tag()}", parent={"value": root["id"]})
    grandchild = _agent(scim, subject=f"gc-{tag()}", parent={"value": child["id"]})
    for a in (root, child, grandchild):
        join_automation(scim, a["id"])
    assert all(
        list(_entries(agents_server, a["id"]).values()) == [",automation,"]
        for a in (root, child, grandchild)
    )
    # the root deactivated: the whole line below it loses its entries in that write
    r = _set(scim, root["id"], "active", False)
    assert r.status_code == 200, r.text
    assert all(_entries(agents_server, a["id"]) == {} for a in (root, child, grandchild))
    # ... and the grandchild's story says why
    lines = story(agents_server.directory, grandchild["id"])["timeline"]
    assert lines[-1]["what"] == f"parent line: agent {root['id']} deactivated"
    assert len(lines[-1]["map_changes"]) == 1
    # back: all three again
    assert _set(scim, root["id"], "active", True).status_code == 200
    assert all(_entries(agents_server, a["id"]) for a in (root, child, grandchild))
    # an owner cascade on the root reaches its descendants too
    owner = scim.post("/Users", json={"schemas": [USER], "userName": f"o-{tag()}@example.com"})
    oid = owner.json()["id"]
    assert _set(scim, root["id"], "owners", [{"value": oid}]).status_code == 200
    off = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]}
    assert scim.patch(f"/Users/{oid}", json=off).status_code == 200
    assert all(_entries(agents_server, a["id"]) == {} for a in (root, child, grandchild))
    with sa.create_engine(agents_server.database_url).connect() as conn:
        detail = conn.execute(
            sa.text("SELECT detail FROM audit_events WHERE kind = 'agent.owner_cascade' "
                    "AND resource_id = :o"), {"o": oid},
        ).scalar_one()  # fmt: skip
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert {a["id"] for a in detail["agents"]} == {root["id"], child["id"], grandchild["id"]}
    assert all(a["suspended"] for a in detail["agents"])
    assert _set(scim, root["id"], "owners", []).status_code == 200
    assert all(_entries(agents_server, a["id"]) for a in (root, child, grandchild))

    # the middle deleted: its child stays suspended (it still names it), the root stands
    assert scim.delete(f"/Agents/{child['id']}").status_code == 204
    assert _entries(agents_server, grandchild["id"]) == {}
    assert _entries(agents_server, root["id"])
    # sending the deleted parent back (Okta's PUT echo) is accepted; it stays suspended
    got = {k: v for k, v in scim.get(f"/Agents/{grandchild['id']}").json().items()
           if k not in ("meta", "groups")}  # fmt: skip
    assert scim.put(f"/Agents/{grandchild['id']}", json=got).status_code == 200
    assert _entries(agents_server, grandchild["id"]) == {}
    # a new parent that stands restores it
    assert _set(scim, grandchild["id"], "parent", {"value": root["id"]}).status_code == 200
    # (the value carries the key's not-before since the deprovisions above: demo cutoff)
    restored = list(_entries(agents_server, grandchild["id"]).values())
    assert len(restored) == 1 and restored[0].startswith(",automation,")
