"""PATCH over real HTTP (RFC 7644 §3.5.2), incl. the shapes Okta and Entra ID send."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.scim import (
    ENTERPRISE_SCHEMA as ENT,
    ERROR_SCHEMA as ERROR,
    USER_SCHEMA as USER,
    new_group,
    new_user,
    patch,
)


def ok(scim: httpx.Client, uid: str, *ops: dict[str, Any]) -> dict[str, Any]:
    r = patch(scim, f"/Users/{uid}", *ops)
    assert r.status_code == 200, r.text
    assert r.json() == scim.get(f"/Users/{uid}").json()
    return r.json()


def err(r: httpx.Response, scim_type: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["schemas"] == [ERROR] and body["status"] == "400"
    assert body["scimType"] == scim_type, body


def members(scim: httpx.Client, gid: str) -> set[str]:
    return {m["value"] for m in scim.get(f"/Groups/{gid}").json().get("members", [])}


def test_add_replace_remove_with_path(scim: httpx.Client) -> None:
    u = new_user(scim, name={"givenName": "A", "familyName": "B"})
    uid = u["id"]
    r = ok(scim, uid, {"op": "add", "path": "title", "value": "Dev"})
    assert r["title"] == "Dev"
    r = ok(scim, uid, {"op": "replace", "path": "title", "value": "Lead"})
    assert r["title"] == "Lead"
    r = ok(scim, uid, {"op": "replace", "path": "name.givenName", "value": "Z"})
    assert r["name"] == {"givenName": "Z", "familyName": "B"}
    r = ok(scim, uid, {"op": "remove", "path": "name.familyName"})
    assert r["name"] == {"givenName": "Z"}
    r = ok(scim, uid, {"op": "remove", "path": "title"})
    assert "title" not in r
    r = ok(scim, uid, {"op": "remove", "path": "title"})  # absent: idempotent no-op
    assert "title" not in r
    r = ok(scim, uid, {"op": "replace", "path": "name", "value": {"familyName": "C"}})
    assert r["name"] == {"givenName": "Z", "familyName": "C"}  # sub-attributes merged


def test_without_path(scim: httpx.Client) -> None:
    u = new_user(scim, name={"givenName": "A"})
    r = ok(
        scim,
        u["id"],
        {
            "op": "replace",
            "value": {
                "displayName": "D",
                "name.familyName": "F",
                f"{ENT}:employeeNumber": "7",
                "active": False,
            },
        },
    )
    assert r["displayName"] == "D" and r["active"] is False
    assert r["name"] == {"givenName": "A", "familyName": "F"}
    assert r[ENT] == {"employeeNumber": "7"} and ENT in r["schemas"]
    r = ok(
        scim,
        u["id"],
        {
            "op": "add",
            "value": {"emails": [{"value": "a@x.org", "type": "work"}], ENT: {"department": "Ops"}},
        },
    )
    assert r["emails"] == [{"value": "a@x.org", "type": "work"}]
    assert r[ENT] == {"employeeNumber": "7", "department": "Ops"}


def test_urn_paths(scim: httpx.Client) -> None:
    u = new_user(scim)
    r = ok(scim, u["id"], {"op": "add", "path": f"{ENT}:employeeNumber", "value": "1"})
    assert r[ENT] == {"employeeNumber": "1"}
    r = ok(scim, u["id"], {"op": "replace", "path": f"{ENT}:manager", "value": {"value": "m-1"}})
    assert r[ENT]["manager"] == {"value": "m-1"}
    r = ok(scim, u["id"], {"op": "replace", "path": f"{ENT}:manager.value", "value": "m-2"})
    assert r[ENT]["manager"] == {"value": "m-2"}
    r = ok(scim, u["id"], {"op": "replace", "path": f"{USER}:displayName", "value": "Q"})
    assert r["displayName"] == "Q"
    r = ok(scim, u["id"], {"op": "remove", "path": f"{ENT}:employeeNumber"})
    assert r[ENT] == {"manager": {"value": "m-2"}}
    r = ok(scim, u["id"], {"op": "remove", "path": ENT})
    assert ENT not in r and r["schemas"] == [USER]


def test_value_path_filters_and_multi_valued(scim: httpx.Client) -> None:
    u = new_user(
        scim,
        emails=[
            {"value": "w@x.org", "type": "work", "primary": True},
            {"value": "h@x.org", "type": "home"},
        ],
    )
    uid = u["id"]
    r = ok(
        scim, uid, {"op": "replace", "path": 'emails[type eq "work"].value', "value": "w2@x.org"}
    )
    assert {e["type"]: e["value"] for e in r["emails"]} == {"work": "w2@x.org", "home": "h@x.org"}
    r = ok(
        scim, uid, {"op": "add", "path": "emails", "value": [{"value": "o@x.org", "type": "other"}]}
    )
    assert len(r["emails"]) == 3
    r = ok(
        scim,
        uid,
        {
            "op": "add",
            "path": "emails",  # re-adding the same value: no duplicate
            "value": [{"value": "o@x.org", "type": "other"}],
        },
    )
    assert len(r["emails"]) == 3
    r = ok(scim, uid, {"op": "replace", "path": 'emails[type eq "home"].primary', "value": True})
    prim = [e["type"] for e in r["emails"] if e.get("primary")]
    assert prim == ["home"]  # at most one primary
    r = ok(scim, uid, {"op": "remove", "path": 'emails[value ew "o@x.org"]'})
    assert {e["type"] for e in r["emails"]} == {"work", "home"}
    r = ok(scim, uid, {"op": "remove", "path": 'emails[type eq "work"].primary'})
    r = ok(
        scim,
        uid,
        {"op": "replace", "path": "emails", "value": [{"value": "only@x.org", "type": "work"}]},
    )
    assert r["emails"] == [{"value": "only@x.org", "type": "work"}]
    r = ok(scim, uid, {"op": "remove", "path": "emails"})
    assert "emails" not in r
    # Entra: replace on a work email that does not exist creates it
    r = ok(scim, uid, {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "n@x.org"})
    assert r["emails"] == [{"type": "work", "value": "n@x.org"}]


def test_patch_errors_leave_resource_unchanged(scim: httpx.Client) -> None:
    u = new_user(scim, title="T", emails=[{"value": "a@x.org", "type": "work"}])
    uid = u["id"]
    before = scim.get(f"/Users/{uid}").json()
    err(
        patch(scim, f"/Users/{uid}", {"op": "replace", "path": "nosuch", "value": "x"}),
        "invalidPath",
    )
    err(
        patch(scim, f"/Users/{uid}", {"op": "replace", "path": "name.nosuch", "value": "x"}),
        "invalidPath",
    )
    err(
        patch(scim, f"/Users/{uid}", {"op": "replace", "path": "emails[type eq", "value": "x"}),
        "invalidPath",
    )
    # (a `type eq` filter matching nothing creates the value, for Entra; others are noTarget)
    err(
        patch(
            scim,
            f"/Users/{uid}",
            {"op": "replace", "path": 'emails[value eq "nope"]', "value": {"value": "x"}},
        ),
        "noTarget",
    )
    err(patch(scim, f"/Users/{uid}", {"op": "remove"}), "noTarget")
    err(
        patch(scim, f"/Users/{uid}", {"op": "replace", "path": "active", "value": 5}),
        "invalidValue",
    )
    err(patch(scim, f"/Users/{uid}", {"op": "replace", "value": {"nosuch": 1}}), "invalidValue")
    err(
        patch(scim, f"/Users/{uid}", {"op": "replace", "path": "id", "value": "other"}),
        "mutability",
    )
    err(
        patch(
            scim,
            f"/Users/{uid}",
            {"op": "replace", "path": "meta.created", "value": "2000-01-01T00:00:00Z"},
        ),
        "mutability",
    )
    err(patch(scim, f"/Users/{uid}", {"op": "remove", "path": "userName"}), "invalidValue")
    err(
        patch(scim, f"/Users/{uid}", {"op": "jump", "path": "title", "value": "x"}), "invalidSyntax"
    )
    err(scim.patch(f"/Users/{uid}", json={"Operations": "nope"}), "invalidSyntax")
    err(
        scim.patch(
            f"/Users/{uid}",
            json={
                "schemas": [USER],
                "Operations": [{"op": "replace", "path": "title", "value": "x"}],
            },
        ),
        "invalidSyntax",
    )
    # atomic: the first op is valid, the second is not; nothing is applied
    err(
        patch(
            scim,
            f"/Users/{uid}",
            {"op": "replace", "path": "title", "value": "NEW"},
            {"op": "replace", "path": "nosuch", "value": 1},
        ),
        "invalidPath",
    )
    assert scim.get(f"/Users/{uid}").json() == before


def test_user_name_change_conflict(scim: httpx.Client) -> None:
    a, b = new_user(scim), new_user(scim)
    r = patch(
        scim,
        f"/Users/{b['id']}",
        {"op": "replace", "path": "userName", "value": a["userName"].upper()},
    )
    assert r.status_code == 409 and r.json()["scimType"] == "uniqueness"
    assert scim.get(f"/Users/{b['id']}").json()["userName"] == b["userName"]


def test_group_members(scim: httpx.Client) -> None:
    u1, u2, u3 = new_user(scim), new_user(scim), new_user(scim)
    g = new_group(scim)
    gid = g["id"]

    def gp(*ops: dict[str, Any]) -> None:
        r = patch(scim, f"/Groups/{gid}", *ops)
        assert r.status_code == 204, r.text

    gp({"op": "add", "path": "members", "value": [{"value": u1["id"]}, {"value": u2["id"]}]})
    assert members(scim, gid) == {u1["id"], u2["id"]}
    gp({"op": "add", "path": "members", "value": [{"value": u1["id"]}]})  # idempotent re-add
    assert members(scim, gid) == {u1["id"], u2["id"]}
    # Okta: remove by filter + add in one PATCH
    gp(
        {"op": "remove", "path": f'members[value eq "{u1["id"]}"]'},
        {"op": "add", "path": "members", "value": [{"value": u3["id"], "display": "x"}]},
    )
    assert members(scim, gid) == {u2["id"], u3["id"]}
    # Entra: Remove with a value array (removes only those)
    gp({"op": "Remove", "path": "members", "value": [{"$ref": None, "value": u2["id"]}]})
    assert members(scim, gid) == {u3["id"]}
    # removing a non-member is a no-op
    gp({"op": "remove", "path": f'members[value eq "{u1["id"]}"]'})
    assert members(scim, gid) == {u3["id"]}
    # Okta full push: replace
    gp({"op": "replace", "path": "members", "value": [{"value": u1["id"]}, {"value": u2["id"]}]})
    assert members(scim, gid) == {u1["id"], u2["id"]}
    # members filter on display (userName), case-insensitive
    gp({"op": "remove", "path": f'members[display eq "{u1["userName"].upper()}"]'})
    assert members(scim, gid) == {u2["id"]}
    # path-less add of members
    gp({"op": "add", "value": {"members": [{"value": u3["id"]}]}})
    assert members(scim, gid) == {u2["id"], u3["id"]}
    gp({"op": "remove", "path": "members"})  # all
    assert members(scim, gid) == set()
    # unknown member id: 400 and nothing changes
    gp({"op": "add", "path": "members", "value": [{"value": u1["id"]}]})
    r = patch(
        scim,
        f"/Groups/{gid}",
        {
            "op": "add",
            "path": "members",
            "value": [{"value": u2["id"]}, {"value": str(uuid.uuid4())}],
        },
    )
    err(r, "invalidValue")
    assert members(scim, gid) == {u1["id"]}


def test_group_rename_and_conflict(scim: httpx.Client) -> None:
    g1, g2 = new_group(scim), new_group(scim)
    r = patch(
        scim,
        f"/Groups/{g1['id']}",
        {"op": "replace", "value": {"id": g1["id"], "displayName": g1["displayName"] + "-renamed"}},
    )
    assert r.status_code == 204, r.text
    assert scim.get(f"/Groups/{g1['id']}").json()["displayName"] == g1["displayName"] + "-renamed"
    r = patch(
        scim,
        f"/Groups/{g2['id']}",
        {"op": "replace", "path": "displayName", "value": g1["displayName"].upper() + "-RENAMED"},
    )
    assert r.status_code == 409 and r.json()["scimType"] == "uniqueness"
    r = patch(scim, f"/Groups/{g2['id']}", {"op": "replace", "value": {"id": "other"}})
    err(r, "mutability")
