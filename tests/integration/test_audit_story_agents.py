"""`scimgate audit user` for an agent: found by id, name, agentUserName or subject (in the
store, and in the trail once deleted), its writes, its groups, the owner cascades that
suspended and restored it, each with the map changes it caused. A real server with the demo
policy's agents (SQLite and PostgreSQL), real SCIM writes, the CLI in-process."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fixtures.server import ScimServer
from tests.integration.test_audit_story import scimgate, story
from tests.support.scim import (
    GROUP_SCHEMA as GROUP,
    PATCH_SCHEMA as PATCH,
    USER_SCHEMA as USER,
    tag,
)

AGENT = "urn:ietf:params:scim:schemas:core:2.0:Agent"


def _patch(scim: httpx.Client, path: str, ops: list[dict[str, Any]]) -> httpx.Response:
    r = scim.patch(path, json={"schemas": [PATCH], "Operations": ops})
    assert r.status_code in (200, 204), r.text
    return r


def join_automation(scim: httpx.Client, agent_id: str) -> None:
    """Put the agent in the demo policy's Automation group (created by the first caller:
    the server is shared by the session)."""
    found = scim.get("/Groups", params={"filter": 'displayName eq "Automation"'}).json()
    if found["totalResults"] == 0:
        r = scim.post("/Groups", json={"schemas": [GROUP], "displayName": "Automation",
                                       "members": [{"value": agent_id}]})  # fmt: skip
        assert r.status_code == 201, r.text
        return
    gid = found["Resources"][0]["id"]
    _patch(scim, f"/Groups/{gid}", [{"op": "add", "path": "members",
                                     "value": [{"value": agent_id}]}])  # fmt: skip


def test_story_of_an_agent(agents_server: ScimServer) -> None:
    t = tag()
    d = agents_server.directory
    with agents_server.client() as scim:
        owner = scim.post("/Users", json={"schemas": [USER], "userName": f"own-{t}@example.com"})
        assert owner.status_code == 201, owner.text
        oid = owner.json()["id"]
        r = scim.post("/Agents", json={
            "schemas": [AGENT], "name": f"bot-{t}", "agentUserName": f"bot-user-{t}",
            "subject": f"Sub-{t}", "agentType": "helper", "owners": [{"value": oid}],
        })  # fmt: skip
        assert r.status_code == 201, r.text
        aid = r.json()["id"]
        join_automation(scim, aid)
        _patch(scim, f"/Users/{oid}", [{"op": "replace", "path": "active", "value": False}])
        _patch(scim, f"/Users/{oid}", [{"op": "replace", "path": "active", "value": True}])
        _patch(scim, f"/Agents/{aid}", [{"op": "replace", "path": "name", "value": f"b2-{t}"}])

    # the same story by id, name, agentUserName (any case) and subject (exact)
    s = story(d, aid)
    for identity in (f"b2-{t}", f"BOT-USER-{t}", f"Sub-{t}"):
        assert story(d, identity) == s, identity
    assert s["kind"] == "agent" and s["user_id"] == aid and s["user_name"] == f"b2-{t}"
    what = [line["what"] for line in s["timeline"]]
    assert what == [
        f"created as agent bot-{t} (active=True, agentType helper, 1 owner(s))",
        "added to group Automation",
        f"suspended: owner User {oid} deactivated",
        f"not suspended: owner User {oid} reactivated",
        f"name bot-{t} → b2-{t}",
    ]
    by_what = dict(zip(what, s["timeline"], strict=True))
    # In the group: its keys get the automation group; suspended: both keys removed;
    # restored: set again; renamed: the name is no key attribute of the demo policy.
    joined = by_what["added to group Automation"]["map_changes"]
    assert len(joined) == 2 and all(c["value"] == ",automation," for c in joined)
    cut = by_what[f"suspended: owner User {oid} deactivated"]["map_changes"]
    assert len(cut) == 2 and all(c["value"] is None and c["deprovision"] for c in cut)
    back = by_what[f"not suspended: owner User {oid} reactivated"]["map_changes"]
    assert {c["key"] for c in back} == {c["key"] for c in cut}
    assert "map_changes" not in by_what[f"name bot-{t} → b2-{t}"]

    # the owner's own story still names the cascade by its kind
    owner_story = story(d, oid)
    assert owner_story["kind"] == "user"
    assert [line["what"] for line in owner_story["timeline"]].count("agent.owner_cascade") == 2

    # deleted: found in the trail by its old names too; the text form says "agent"
    with agents_server.client() as scim:
        assert scim.delete(f"/Agents/{aid}").status_code == 204
    gone = story(d, f"bot-{t}")
    assert gone["user_id"] == aid
    assert gone["timeline"][-1]["what"] == "deleted (removed from 1 group(s))"
    assert len(gone["timeline"][-1]["map_changes"]) == 2
    p = scimgate(d, "audit", "user", f"bot-user-{t}")
    assert p.returncode == 0 and p.stdout.splitlines()[0] == f"agent b2-{t} (id {aid})"
