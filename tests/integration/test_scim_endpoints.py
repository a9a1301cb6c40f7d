"""Every SCIM endpoint over real HTTP against a real `scimgate serve` (SQLite and PostgreSQL):
CRUD on /Users and /Groups, POST /.search, /Bulk, discovery, /Me."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.support.scim import (
    BULK_REQUEST_SCHEMA as BULK_REQ,
    BULK_RESPONSE_SCHEMA as BULK_RESP,
    ENTERPRISE_SCHEMA as ENT,
    ERROR_SCHEMA as ERROR,
    GROUP_SCHEMA as GROUP,
    LIST_SCHEMA as LIST,
    PATCH_SCHEMA as PATCH,
    SEARCH_SCHEMA as SEARCH,
    USER_SCHEMA as USER,
    new_group,
    new_user,
    tag,
    user_body,
)


def assert_error(r: httpx.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/scim+json")
    body = r.json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert isinstance(body.get("detail"), str) and body["detail"]
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body


# --- /Users ----------------------------------------------------------------------------------


def test_user_crud(scim: httpx.Client) -> None:
    name = f"Crud.{tag()}@Example.com"
    r = scim.post(
        "/Users",
        json=user_body(
            name,
            name={"givenName": "Ada", "familyName": "Lovelace"},
            active=True,
            emails=[{"value": name, "type": "work", "primary": True}],
            **{ENT: {"employeeNumber": "42", "department": "R&D"}},
        ),
    )
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/scim+json")
    created = r.json()
    uid = created["id"]
    assert r.headers["location"] == created["meta"]["location"]
    assert created["meta"]["location"].endswith(f"/Users/{uid}")
    assert r.headers["etag"] == created["meta"]["version"]
    assert created["meta"]["resourceType"] == "User"
    assert created["meta"]["created"] and created["meta"]["lastModified"]
    assert created["userName"] == name
    assert set(created["schemas"]) == {USER, ENT}
    assert created[ENT] == {"employeeNumber": "42", "department": "R&D"}

    got = scim.get(f"/Users/{uid}")
    assert got.status_code == 200
    assert got.json() == created

    listed = scim.get("/Users", params={"filter": f'id eq "{uid}"'}).json()
    assert listed["schemas"] == [LIST]
    assert listed["totalResults"] == 1 and listed["Resources"][0]["id"] == uid

    put = scim.put(f"/Users/{uid}", json=user_body(name, displayName="Ada L.", active=False))
    assert put.status_code == 200, put.text
    replaced = put.json()
    assert replaced["displayName"] == "Ada L." and replaced["active"] is False
    assert "name" not in replaced and ENT not in replaced  # PUT replaces everything
    assert replaced["meta"]["version"] != created["meta"]["version"]
    assert replaced["meta"]["created"] == created["meta"]["created"]

    patched = scim.patch(
        f"/Users/{uid}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "replace", "path": "title", "value": "Countess"}],
        },
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["title"] == "Countess"
    assert patched.json()["displayName"] == "Ada L."

    assert scim.delete(f"/Users/{uid}").status_code == 204
    assert_error(scim.get(f"/Users/{uid}"), 404)
    assert_error(scim.delete(f"/Users/{uid}"), 404)


def test_user_read_only_input_ignored_and_password_dropped(scim: httpx.Client) -> None:
    name = f"ro-{tag()}"
    r = scim.post(
        "/Users",
        json=user_body(
            name,
            id="client-chosen",
            password="s3cret!",
            groups=[],
            meta={"resourceType": "User", "created": "2000-01-01T00:00:00Z"},
        ),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] != "client-chosen"
    assert "password" not in body
    assert not body["meta"]["created"].startswith("2000")
    assert "password" not in scim.get(f"/Users/{body['id']}").text


# --- /Groups ---------------------------------------------------------------------------------


def test_group_crud(scim: httpx.Client) -> None:
    a, b = new_user(scim), new_user(scim)
    name = f"grp-{tag()}"
    r = scim.post(
        "/Groups",
        json={
            "schemas": [GROUP],
            "displayName": name,
            "externalId": "ext-1",
            "members": [{"value": a["id"]}],
        },
    )
    assert r.status_code == 201, r.text
    g = r.json()
    gid = g["id"]
    assert r.headers["location"].endswith(f"/Groups/{gid}")
    assert g["displayName"] == name and g["externalId"] == "ext-1"
    assert [m["value"] for m in g["members"]] == [a["id"]]
    assert g["members"][0]["display"] == a["userName"]
    assert g["members"][0]["type"] == "User"
    assert g["members"][0]["$ref"].endswith(f"/Users/{a['id']}")

    got = scim.get(f"/Groups/{gid}").json()
    assert got == g
    # the user lists the group (read-only "groups")
    ua = scim.get(f"/Users/{a['id']}").json()
    assert {x["value"] for x in ua["groups"]} == {gid}

    put = scim.put(
        f"/Groups/{gid}",
        json={"schemas": [GROUP], "displayName": name + "-x", "members": [{"value": b["id"]}]},
    )
    assert put.status_code == 200, put.text
    assert put.json()["displayName"] == name + "-x"
    assert [m["value"] for m in put.json()["members"]] == [b["id"]]
    assert "externalId" not in put.json()

    p = scim.patch(
        f"/Groups/{gid}",
        json={
            "schemas": [PATCH],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": a["id"]}]}],
        },
    )
    assert p.status_code == 204, p.text
    assert p.content == b""
    members = {m["value"] for m in scim.get(f"/Groups/{gid}").json()["members"]}
    assert members == {a["id"], b["id"]}

    listed = scim.get("/Groups", params={"filter": f'displayName eq "{name}-x"'}).json()
    assert listed["totalResults"] == 1 and listed["Resources"][0]["id"] == gid

    assert scim.delete(f"/Groups/{gid}").status_code == 204
    assert_error(scim.get(f"/Groups/{gid}"), 404)
    assert "groups" not in scim.get(f"/Users/{a['id']}").json()


def test_group_patch_with_attributes_returns_resource(scim: httpx.Client) -> None:
    g = new_group(scim)
    r = scim.patch(
        f"/Groups/{g['id']}",
        params={"attributes": "displayName"},
        json={
            "schemas": [PATCH],
            "Operations": [
                {"op": "replace", "path": "displayName", "value": g["displayName"] + "!"}
            ],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["displayName"] == g["displayName"] + "!"


def test_group_member_unknown_id_rejected(scim: httpx.Client) -> None:
    name = f"bad-{tag()}"
    r = scim.post(
        "/Groups",
        json={"schemas": [GROUP], "displayName": name, "members": [{"value": str(uuid.uuid4())}]},
    )
    assert_error(r, 400, "invalidValue")
    assert (
        scim.get("/Groups", params={"filter": f'displayName eq "{name}"'}).json()["totalResults"]
        == 0
    )


# --- POST /.search ---------------------------------------------------------------------------


def test_search_users_groups_and_root(scim: httpx.Client) -> None:
    mark = tag()
    u = new_user(scim, f"search-{mark}@example.com")
    g = new_group(scim, f"search-{mark}")
    body = {
        "schemas": [SEARCH],
        "filter": f'userName sw "search-{mark}"',
        "attributes": ["userName"],
        "startIndex": 1,
        "count": 10,
    }
    r = scim.post("/Users/.search", json=body)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["schemas"] == [LIST] and res["totalResults"] == 1
    only = {k: v for k, v in res["Resources"][0].items() if k != "meta"}  # meta: kept by design
    assert only == {"schemas": [USER], "id": u["id"], "userName": u["userName"]}

    r = scim.post(
        "/Groups/.search",
        json={
            "schemas": [SEARCH],
            "filter": f'displayName eq "search-{mark}"',
            "excludedAttributes": ["members"],
        },
    )
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["Resources"]] == [g["id"]]

    # root: both types; a filter on a shared attribute (id) finds each
    r = scim.post(
        "/.search", json={"schemas": [SEARCH], "filter": f'id eq "{u["id"]}" or id eq "{g["id"]}"'}
    )
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["totalResults"] == 2
    assert {x["id"] for x in res["Resources"]} == {u["id"], g["id"]}
    assert {x["meta"]["resourceType"] for x in res["Resources"]} == {"User", "Group"}


def test_search_rejects_wrong_schema_and_bad_body(scim: httpx.Client) -> None:
    assert_error(scim.post("/Users/.search", json={"schemas": [USER]}), 400, "invalidSyntax")
    assert_error(scim.post("/Users/.search", json=[1, 2]), 400, "invalidSyntax")
    assert_error(
        scim.post("/Users/.search", json={"schemas": [SEARCH], "filter": "userName eq"}),
        400,
        "invalidFilter",
    )


# --- /Bulk -----------------------------------------------------------------------------------


def test_bulk_with_bulk_id_references(scim: httpx.Client) -> None:
    mark = tag()
    body = {
        "schemas": [BULK_REQ],
        "Operations": [
            # the group comes first and references users created later in the same request
            {
                "method": "POST",
                "path": "/Groups",
                "bulkId": "g",
                "data": {
                    "schemas": [GROUP],
                    "displayName": f"bulk-{mark}",
                    "members": [{"value": "bulkId:u1"}, {"value": "bulkId:u2"}],
                },
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u1",
                "data": user_body(f"bulk1-{mark}"),
            },
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "u2",
                "data": user_body(f"bulk2-{mark}"),
            },
            {
                "method": "PATCH",
                "path": "/Users/bulkId:u1",
                "data": {
                    "schemas": [PATCH],
                    "Operations": [{"op": "replace", "path": "title", "value": "T"}],
                },
            },
        ],
    }
    r = scim.post("/Bulk", json=body)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["schemas"] == [BULK_RESP]
    ops = {o.get("bulkId", o["method"]): o for o in res["Operations"]}
    assert {o["status"] for o in res["Operations"]} <= {"200", "201"}, res
    u1 = scim.get(ops["u1"]["location"].split("/scim/v2", 1)[1]).json()
    u2 = scim.get(ops["u2"]["location"].split("/scim/v2", 1)[1]).json()
    g = scim.get(ops["g"]["location"].split("/scim/v2", 1)[1]).json()
    assert {m["value"] for m in g["members"]} == {u1["id"], u2["id"]}
    assert u1["title"] == "T"


def test_bulk_fail_on_errors(scim: httpx.Client) -> None:
    mark = tag()
    dup = new_user(scim, f"dup-{mark}")
    ops = [
        {"method": "POST", "path": "/Users", "bulkId": "a", "data": user_body(dup["userName"])},
        {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"schemas": [USER]}},
        {"method": "POST", "path": "/Users", "bulkId": "c", "data": user_body(f"c-{mark}")},
    ]
    r = scim.post("/Bulk", json={"schemas": [BULK_REQ], "failOnErrors": 2, "Operations": ops})
    assert r.status_code == 200, r.text
    res = r.json()["Operations"]
    assert [o["status"] for o in res] == ["409", "400"]
    assert res[0]["response"]["scimType"] == "uniqueness"
    assert res[0]["response"]["schemas"] == [ERROR]
    assert (
        scim.get("/Users", params={"filter": f'userName eq "c-{mark}"'}).json()["totalResults"] == 0
    )
    # without failOnErrors every operation runs
    r = scim.post("/Bulk", json={"schemas": [BULK_REQ], "Operations": ops})
    assert [o["status"] for o in r.json()["Operations"]] == ["409", "400", "201"]


def test_bulk_limits_announced_and_enforced(scim: httpx.Client) -> None:
    spc = scim.get("/ServiceProviderConfig").json()["bulk"]
    assert spc["supported"] is True
    max_ops, max_payload = spc["maxOperations"], spc["maxPayloadSize"]
    assert isinstance(max_ops, int) and isinstance(max_payload, int)
    ops = [{"method": "DELETE", "path": f"/Users/{uuid.uuid4()}"}] * (max_ops + 1)
    r = scim.post("/Bulk", json={"schemas": [BULK_REQ], "Operations": ops})
    assert_error(r, 413)
    big = {
        "schemas": [BULK_REQ],
        "Operations": [
            {
                "method": "POST",
                "path": "/Users",
                "bulkId": "x",
                "data": user_body("x", displayName="y" * (max_payload + 10)),
            }
        ],
    }
    assert_error(scim.post("/Bulk", json=big), 413)
    # at the limit of operations it is accepted (each DELETE is a 404)
    r = scim.post(
        "/Bulk",
        json={
            "schemas": [BULK_REQ],
            "Operations": [{"method": "DELETE", "path": f"/Users/{uuid.uuid4()}"}],
        },
    )
    assert r.status_code == 200 and r.json()["Operations"][0]["status"] == "404"


def test_bulk_bad_requests(scim: httpx.Client) -> None:
    assert_error(scim.post("/Bulk", json={"Operations": []}), 400, "invalidSyntax")
    assert_error(scim.post("/Bulk", json=[]), 400, "invalidSyntax")
    r = scim.post(
        "/Bulk",
        json={
            "schemas": [BULK_REQ],
            "Operations": [
                {
                    "method": "POST",
                    "path": "/Groups",
                    "bulkId": "g",
                    "data": {"displayName": f"g-{tag()}", "members": [{"value": "bulkId:nope"}]},
                }
            ],
        },
    )
    assert r.status_code == 200
    assert r.json()["Operations"][0]["status"] == "400"


# --- discovery -------------------------------------------------------------------------------


def test_service_provider_config(scim: httpx.Client) -> None:
    r = scim.get("/ServiceProviderConfig")
    assert r.status_code == 200
    spc = r.json()
    assert spc["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]
    assert spc["patch"]["supported"] is True
    assert spc["filter"]["supported"] is True and spc["filter"]["maxResults"] >= 1
    assert spc["sort"]["supported"] is True
    assert spc["etag"]["supported"] is True
    assert spc["changePassword"]["supported"] is False
    assert spc["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    # maxResults is enforced: a larger count is capped
    mx = spc["filter"]["maxResults"]
    res = scim.get("/Users", params={"count": mx + 50}).json()
    assert res["itemsPerPage"] <= mx


def test_resource_types(scim: httpx.Client) -> None:
    r = scim.get("/ResourceTypes").json()
    assert (
        r["schemas"] == [LIST] and r["totalResults"] == 4
    )  # User, Group, Agent, AgenticApplication (issue 13)
    by = {x["id"]: x for x in r["Resources"]}
    assert by["User"]["endpoint"] == "/Users" and by["User"]["schema"] == USER
    assert by["User"]["schemaExtensions"] == [{"schema": ENT, "required": False}]
    assert by["Group"]["endpoint"] == "/Groups" and by["Group"]["schema"] == GROUP
    for name in ("User", "Group"):
        one = scim.get(f"/ResourceTypes/{name}")
        assert one.status_code == 200 and one.json() == by[name]
    assert_error(scim.get("/ResourceTypes/Nope"), 404)


def _attr(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in schema["attributes"] if a["name"] == name)


def test_schemas(scim: httpx.Client) -> None:
    r = scim.get("/Schemas").json()
    assert r["schemas"] == [LIST]
    by = {s["id"]: s for s in r["Resources"]}
    # issue 13 added the agent drafts' two core schemas
    agent_schemas = {
        f"urn:ietf:params:scim:schemas:core:2.0:{n}" for n in ("Agent", "AgenticApplication")
    }
    assert set(by) == {USER, ENT, GROUP} | agent_schemas
    for sid, s in by.items():
        one = scim.get(f"/Schemas/{sid}")
        assert one.status_code == 200 and one.json() == s
        assert "null" not in one.text  # Entra: no nulls
    assert_error(scim.get("/Schemas/urn:nope"), 404)
    user = by[USER]
    assert _attr(user, "userName")["caseExact"] is False
    assert _attr(user, "userName")["uniqueness"] == "server"
    assert _attr(user, "password")["returned"] == "never"
    assert _attr(user, "password")["mutability"] == "writeOnly"
    assert _attr(user, "groups")["mutability"] == "readOnly"
    assert _attr(by[GROUP], "displayName")["uniqueness"] == "server"


def test_announced_case_exact_matches_behaviour(scim: httpx.Client) -> None:
    """userName caseExact=false: filters and uniqueness ignore case; a caseExact=true
    attribute (members.value) does not."""
    user = {a["name"]: a for a in scim.get(f"/Schemas/{USER}").json()["attributes"]}
    mark = tag()
    u = new_user(
        scim,
        f"Case.{mark}@Example.com",
        displayName=f"Disp {mark}",
        emails=[{"value": f"Case.{mark}@Example.com", "type": "work"}],
    )
    for attr, probe in (("userName", f"case.{mark}@example.COM"), ("displayName", f"DISP {mark}")):
        assert user[attr]["caseExact"] is False
        res = scim.get("/Users", params={"filter": f'{attr} eq "{probe}"'}).json()
        assert [x["id"] for x in res["Resources"]] == [u["id"]], attr
    sub = {s["name"]: s for s in user["emails"]["subAttributes"]}
    assert sub["value"]["caseExact"] is False
    res = scim.get("/Users", params={"filter": f'emails.value eq "CASE.{mark}@example.com"'}).json()
    assert [x["id"] for x in res["Resources"]] == [u["id"]]
    group = {a["name"]: a for a in scim.get(f"/Schemas/{GROUP}").json()["attributes"]}
    msub = {s["name"]: s for s in group["members"]["subAttributes"]}
    assert msub["value"]["caseExact"] is True
    g = new_group(scim, members=[u["id"]])
    res = scim.get("/Groups", params={"filter": f'members.value eq "{u["id"].upper()}"'}).json()
    assert g["id"] not in [x["id"] for x in res["Resources"]]
    res = scim.get("/Groups", params={"filter": f'members.value eq "{u["id"]}"'}).json()
    assert [x["id"] for x in res["Resources"]] == [g["id"]]


def test_me_is_501(scim: httpx.Client) -> None:
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        r = scim.request(method, "/Me", content=json.dumps({}) if method != "GET" else None)
        assert_error(r, 501)


@pytest.mark.parametrize("path", ["/Users", "/Groups"])
def test_list_is_a_list_response(scim: httpx.Client, path: str) -> None:
    r = scim.get(path, params={"count": 1})
    assert r.status_code == 200
    body = r.json()
    assert body["schemas"] == [LIST]
    for key in ("totalResults", "startIndex", "itemsPerPage"):
        assert isinstance(body[key], int)
    assert isinstance(body["Resources"], list)
