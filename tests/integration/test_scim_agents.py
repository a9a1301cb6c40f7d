"""/Agents and /AgenticApplications over real HTTP, on SQLite and PostgreSQL: what the SCIM
conformance checkers run (discovery, POST → GET → PUT → PATCH active:false → DELETE → GET
404, ten rapid create/delete cycles), both drafts' attribute names, owners that must exist,
agents as group members, filters in SQL, Bulk, ETags, and the audited owner cascade."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.fixtures.server import ScimServer
from tests.support.scim import (
    BULK_REQUEST_SCHEMA,
    ERROR_SCHEMA,
    PATCH_SCHEMA,
    SEARCH_SCHEMA,
    new_user,
    tag,
)

# draft-abbey-scim-agent-extension-00 §3, §4 (written out: a test must fail on drift)
AGENT = "urn:ietf:params:scim:schemas:core:2.0:Agent"
APP = "urn:ietf:params:scim:schemas:core:2.0:AgenticApplication"
ENDPOINTS = {"Agents": AGENT, "AgenticApplications": APP}


def _error(r: httpx.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["schemas"] == [ERROR_SCHEMA] and body["status"] == str(status)
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return dict(body)


def _agent(scim: httpx.Client, **extra: Any) -> dict[str, Any]:
    r = scim.post("/Agents", json={"schemas": [AGENT], "name": f"bot-{tag()}", **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _count(scim: httpx.Client, endpoint: str) -> int:
    return int(scim.get(f"/{endpoint}", params={"count": 0}).json()["totalResults"])


def test_discovery_lists_the_agent_types(scim: httpx.Client) -> None:
    types = scim.get("/ResourceTypes").json()["Resources"]
    by = {t["name"]: t for t in types}
    assert by["Agent"]["endpoint"] == "/Agents" and by["Agent"]["schema"] == AGENT
    assert by["AgenticApplication"]["endpoint"] == "/AgenticApplications"
    assert scim.get("/ResourceTypes/Agent").json()["schema"] == AGENT
    ids = {s["id"] for s in scim.get("/Schemas").json()["Resources"]}
    assert {AGENT, APP} <= ids
    # the draft's own ResourceType example writes the URN in lower case
    doc = scim.get(f"/Schemas/{AGENT.lower()}")
    assert doc.status_code == 200 and doc.json()["id"] == AGENT
    names = {a["name"] for a in doc.json()["attributes"]}
    assert {"name", "agentUserName", "owners", "subject", "agentType", "groups"} <= names
    spc = scim.get("/ServiceProviderConfig").json()
    assert spc["agentExtension"] == {
        "supported": True,
        "agentsSupported": True,
        "agenticApplicationsSupported": True,
    }


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_checker_sequence(scim: httpx.Client, endpoint: str) -> None:
    """scim-sanity's agent phase: POST → GET → PUT → PATCH active:false → DELETE → GET 404."""
    schema = ENDPOINTS[endpoint]
    body = {"schemas": [schema], "name": f"n-{tag()}", "displayName": "Probe", "active": True}
    r = scim.post(f"/{endpoint}", json=body)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/scim+json")
    created = r.json()
    rid = created["id"]
    assert r.headers["Location"] == created["meta"]["location"]
    assert created["meta"]["resourceType"] == ("Agent" if endpoint == "Agents" else
                                               "AgenticApplication")  # fmt: skip
    got = scim.get(f"/{endpoint}/{rid}")
    assert got.status_code == 200 and got.json()["name"] == body["name"]
    put = {k: v for k, v in got.json().items() if k != "meta"}
    put["displayName"] = "Probe renamed"
    r = scim.put(f"/{endpoint}/{rid}", json=put)
    assert r.status_code == 200, r.text
    assert scim.get(f"/{endpoint}/{rid}").json()["displayName"] == "Probe renamed"
    r = scim.patch(
        f"/{endpoint}/{rid}",
        json={"schemas": [PATCH_SCHEMA],
              "Operations": [{"op": "replace", "path": "active", "value": False}]},
    )  # fmt: skip
    assert r.status_code == 200 and r.json()["active"] is False
    assert scim.get(f"/{endpoint}/{rid}").json()["active"] is False
    assert scim.delete(f"/{endpoint}/{rid}").status_code == 204
    _error(scim.get(f"/{endpoint}/{rid}"), 404)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_ten_rapid_create_delete_cycles(scim: httpx.Client, endpoint: str) -> None:
    before = _count(scim, endpoint)
    name = f"churn-{tag()}"
    for _ in range(10):
        r = scim.post(f"/{endpoint}", json={"schemas": [ENDPOINTS[endpoint]], "name": name})
        assert r.status_code == 201, r.text
        assert scim.delete(f"/{endpoint}/{r.json()['id']}").status_code == 204
    assert _count(scim, endpoint) == before


def test_both_drafts_names_and_lower_case_urns(scim: httpx.Client) -> None:
    # wzdk-00: agentUserName only; URN-qualified attribute with the lower-case URN
    user_name = f"support-agent-{tag()}"
    r = scim.post(
        "/Agents",
        json={"schemas": [AGENT.lower()], f"{AGENT.lower()}:agentUserName": user_name,
              "externalId": "agent-42"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["agentUserName"] == user_name and r.json()["schemas"] == [AGENT]
    # agentUserName is unique, case-insensitively (like userName)
    _error(scim.post("/Agents", json={"agentUserName": user_name.upper()}), 409, "uniqueness")
    # neither name nor agentUserName
    _error(scim.post("/Agents", json={"displayName": "nameless"}), 400, "invalidValue")
    # abbey-00 attributes round-trip
    full = _agent(
        scim,
        agentType="Autonomous",
        subject="spiffe://example.org/bot",
        protocols=[{"type": "MCP-Client", "specificationUrl": "https://example.org/mcp"}],
        parent={"value": r.json()["id"]},
    )
    got = scim.get(f"/Agents/{full['id']}").json()
    assert got["agentType"] == "Autonomous" and got["protocols"][0]["type"] == "MCP-Client"
    assert got["subject"] == "spiffe://example.org/bot"


def test_invalid_input_is_400_and_commits_nothing(scim: httpx.Client) -> None:
    before = _count(scim, "Agents")
    bad = [
        {"name": f"x-{tag()}", "owners": [{"value": "no-such-user"}]},
        {"name": f"x-{tag()}", "owners": "not-a-list-of-objects"},
        {"name": f"x-{tag()}", "active": "maybe"},
        {"name": f"x-{tag()}", "unknownThing": 1},
        {"name": 7},
        ["not", "an", "object"],
    ]
    for body in bad:
        r = scim.post("/Agents", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["schemas"] == [ERROR_SCHEMA]
    _error(scim.post("/AgenticApplications", json={"name": "a", "agents": [{"value": "nope"}]}),
           400, "invalidValue")  # fmt: skip
    assert _count(scim, "Agents") == before
    a = _agent(scim)
    # read-only attributes cannot be patched
    r = scim.patch(
        f"/Agents/{a['id']}",
        json={"Operations": [{"op": "add", "path": "groups", "value": [{"value": "g"}]}]},
    )
    assert r.status_code == 400, r.text
    # a PATCH adding a missing owner fails whole: nothing of it is kept
    r = scim.patch(
        f"/Agents/{a['id']}",
        json={"Operations": [{"op": "replace", "path": "displayName", "value": "changed"},
                             {"op": "add", "path": "owners", "value": [{"value": "ghost"}]}]},
    )  # fmt: skip
    _error(r, 400, "invalidValue")
    assert "displayName" not in scim.get(f"/Agents/{a['id']}").json()


def test_owners_groups_and_applications(scim: httpx.Client) -> None:
    owner = new_user(scim)
    a = _agent(scim, owners=[{"value": owner["id"]}])
    assert a["owners"][0]["type"] == "User"
    assert a["owners"][0]["$ref"].endswith(f"/Users/{owner['id']}")
    _error(scim.post("/Agents", json={"name": "t", "owners": [{"value": owner["id"],
                                                               "type": "Group"}]}), 400)  # fmt: skip
    # agents may be members of groups
    r = scim.post("/Groups", json={"displayName": f"Automation-{tag()}",
                                   "members": [{"value": a["id"]}]})  # fmt: skip
    assert r.status_code == 201, r.text
    group = r.json()
    assert group["members"][0]["type"] == "Agent"
    assert group["members"][0]["$ref"].endswith(f"/Agents/{a['id']}")
    assert group["members"][0]["display"] == a["name"]
    got = scim.get(f"/Agents/{a['id']}").json()
    assert got["groups"] == [{"value": group["id"], "$ref": got["groups"][0]["$ref"],
                              "display": group["displayName"], "type": "direct"}]  # fmt: skip
    # a group may own an agent too
    b = _agent(scim, owners=[{"value": group["id"]}])
    assert b["owners"][0]["type"] == "Group"
    # an application's agents: the agent lists the application
    r = scim.post(
        "/AgenticApplications",
        json={"schemas": [APP], "name": f"app-{tag()}",
              "oAuthConfiguration": [{"clientId": "0oa-client", "issuerUri": "https://idp.example"}],
              "agents": [{"value": a["id"], "type": "owned"}]},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    app = r.json()
    assert app["agents"][0]["value"] == a["id"] and app["agents"][0]["display"] == a["name"]
    got = scim.get(f"/Agents/{a['id']}").json()
    assert got["applications"][0]["value"] == app["id"]
    assert got["applications"][0]["type"] == "owned"
    # deleting the agent removes it from the group and the application
    assert scim.delete(f"/Agents/{a['id']}").status_code == 204
    assert "members" not in scim.get(f"/Groups/{group['id']}").json()
    assert "agents" not in scim.get(f"/AgenticApplications/{app['id']}").json()


def test_filters_sort_and_pages_in_sql(scim: httpx.Client) -> None:
    t = tag()
    owner = new_user(scim)
    made = [
        _agent(scim, name=f"f{t}-{i}", agentUserName=f"AU{t}-{i}", agentType="assistant",
               subject=f"sub-{t}-{i}", active=i != 2,
               owners=[{"value": owner["id"]}] if i == 1 else [])
        for i in range(4)
    ]  # fmt: skip

    def ids(filter_text: str, **params: Any) -> list[str]:
        r = scim.get("/Agents", params={"filter": filter_text, **params})
        assert r.status_code == 200, r.text
        return [x["id"] for x in r.json()["Resources"]]

    assert ids(f'name eq "F{t}-0"') == [made[0]["id"]]  # name: not caseExact
    assert ids(f'agentUserName eq "au{t}-3"') == [made[3]["id"]]
    assert ids(f'name sw "f{t}" and active eq false') == [made[2]["id"]]
    assert ids(f'owners.value eq "{owner["id"]}"') == [made[1]["id"]]
    assert ids(f'subject eq "sub-{t}-1" or subject eq "sub-{t}-3"', sortBy="name") == [
        made[1]["id"], made[3]["id"]]  # fmt: skip
    assert len(ids(f'name sw "f{t}"', startIndex=2, count=2)) == 2
    desc = ids(f'name sw "f{t}"', sortBy="name", sortOrder="descending")
    assert desc == [m["id"] for m in reversed(made)]
    _error(scim.get("/Agents", params={"filter": 'userName eq "x"'}), 400, "invalidFilter")
    _error(scim.get("/Agents", params={"filter": "name eq"}), 400, "invalidFilter")
    # .search on the type, and paging
    r = scim.post("/Agents/.search", json={"schemas": [SEARCH_SCHEMA],
                                           "filter": f'name sw "f{t}"', "count": 1})  # fmt: skip
    assert r.status_code == 200 and r.json()["totalResults"] == 4
    assert r.json()["itemsPerPage"] == 1


def test_etags(scim: httpx.Client) -> None:
    a = _agent(scim)
    version = a["meta"]["version"]
    r = scim.get(f"/Agents/{a['id']}", headers={"If-None-Match": version})
    assert r.status_code == 304
    ok = scim.patch(f"/Agents/{a['id']}", headers={"If-Match": version},
                    json={"Operations": [{"op": "replace", "path": "description", "value": "d"}]})  # fmt: skip
    assert ok.status_code == 200 and ok.headers["ETag"] != version
    stale = scim.patch(f"/Agents/{a['id']}", headers={"If-Match": version},
                       json={"Operations": [{"op": "replace", "path": "description", "value": "e"}]})  # fmt: skip
    _error(stale, 412)
    _error(scim.delete(f"/Agents/{a['id']}", headers={"If-Match": version}), 412)


def test_bulk_with_bulk_id_references(scim: httpx.Client) -> None:
    t = tag()
    r = scim.post(
        "/Bulk",
        json={
            "schemas": [BULK_REQUEST_SCHEMA],
            "Operations": [
                {"method": "POST", "path": "/Agents", "bulkId": "a1",
                 "data": {"schemas": [AGENT], "name": f"bulk-{t}"}},
                {"method": "POST", "path": "/AgenticApplications", "bulkId": "p1",
                 "data": {"name": f"bulkapp-{t}", "agents": [{"value": "bulkId:a1"}]}},
                {"method": "PATCH", "path": "/Agents/bulkId:a1",
                 "data": {"Operations": [{"op": "replace", "path": "active", "value": False}]}},
                {"method": "POST", "path": "/Agents", "bulkId": "bad",
                 "data": {"name": f"bad-{t}", "owners": [{"value": "ghost"}]}},
            ],
        },
    )  # fmt: skip
    assert r.status_code == 200, r.text
    statuses = [op["status"] for op in r.json()["Operations"]]
    assert statuses[:3] == ["201", "201", "200"] and statuses[3] == "400"
    agent_id = r.json()["Operations"][0]["location"].rsplit("/", 1)[1]
    got = scim.get(f"/Agents/{agent_id}").json()
    assert got["active"] is False and got["applications"][0]["type"] == "owned"
    assert scim.get("/Agents", params={"filter": f'name eq "bad-{t}"'}).json()["totalResults"] == 0


def _cascades(server: ScimServer, owner_id: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT operation, detail FROM audit_events WHERE kind = "
                        "'agent.owner_cascade' AND resource_id = :o ORDER BY seq"), {"o": owner_id},
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    out = []
    for operation, detail in rows:
        d = json.loads(detail) if isinstance(detail, str) else detail
        out.append({"operation": operation, **d})
    return out


def test_owner_cascade_is_audited(scim: httpx.Client, scim_server: ScimServer) -> None:
    owner = new_user(scim)
    a = _agent(scim, owners=[{"value": owner["id"]}])
    off = {"Operations": [{"op": "replace", "path": "active", "value": False}]}
    on = {"Operations": [{"op": "replace", "path": "active", "value": True}]}
    assert scim.patch(f"/Users/{owner['id']}", json=off).status_code == 200
    assert scim.patch(f"/Users/{owner['id']}", json=on).status_code == 200
    assert scim.delete(f"/Users/{owner['id']}").status_code == 204
    events = _cascades(scim_server, owner["id"])
    assert [e["operation"] for e in events] == [
        "owner_deactivated", "owner_reactivated", "owner_deleted"]  # fmt: skip
    assert [e["agents"][0]["suspended"] for e in events] == [True, False, True]
    assert all(e["owner"] == {"id": owner["id"], "type": "User"} for e in events)
    assert events[0]["agents"][0]["id"] == a["id"] and events[0]["agents"][0]["name"] == a["name"]
    # the deleted owner is still named (the agent stays suspended); sending it back in a PUT
    # is accepted, a new unknown owner is not
    put = {k: v for k, v in scim.get(f"/Agents/{a['id']}").json().items() if k != "meta"}
    assert scim.put(f"/Agents/{a['id']}", json=put).status_code == 200
    put["owners"] = [*put["owners"], {"value": "someone-else"}]
    _error(scim.put(f"/Agents/{a['id']}", json=put), 400, "invalidValue")
