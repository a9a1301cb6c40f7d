"""Filters, sorting, paging and attribute projection over real HTTP (RFC 7644 §3.4.2)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.scim import (
    ENTERPRISE_SCHEMA as ENT,
    ERROR_SCHEMA as ERROR,
    GROUP_SCHEMA as GROUP,
    USER_SCHEMA as USER,
    tag,
)


def post(scim: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = scim.post(path, json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def people(scim: httpx.Client) -> dict[str, Any]:
    """Three users under a unique userName prefix; filters are and-ed with that prefix."""
    m = f"q{tag()}"
    alice = post(
        scim,
        "/Users",
        {
            "schemas": [USER, ENT],
            "userName": f"{m}-Alice@Example.com",
            "displayName": "Alice",
            "title": "Engineer",
            "active": True,
            "externalId": f"Ext-{m}-A",
            "name": {"givenName": "Alice", "familyName": "Smith"},
            "emails": [
                {"value": "alice@example.com", "type": "work", "primary": True},
                {"value": "alice@home.org", "type": "home"},
            ],
            ENT: {"employeeNumber": "100", "department": "R&D"},
        },
    )
    bob = post(
        scim,
        "/Users",
        {
            "schemas": [USER, ENT],
            "userName": f"{m}-bob@example.com",
            "displayName": "Bob",
            "title": "Manager",
            "active": False,
            "externalId": f"ext-{m}-b",
            "name": {"givenName": "Bob", "familyName": "Jones"},
            "emails": [{"value": "bob@other.net", "type": "work"}],
            ENT: {"employeeNumber": "200"},
        },
    )
    carol = post(
        scim,
        "/Users",
        {
            "schemas": [USER, ENT],
            "userName": f"{m}-carol@example.com",
            "displayName": "Carol",
            "active": True,
            "name": {"givenName": "Carol", "familyName": "Adams"},
            "emails": [{"value": "carol@example.com", "type": "home"}],
            ENT: {"employeeNumber": "300"},
        },
    )
    return {"m": m, "alice": alice, "bob": bob, "carol": carol}


def names(scim: httpx.Client, people: dict[str, Any], filt: str, **params: Any) -> list[str]:
    """The first names (alice/bob/carol) matching ``filt`` among this test's users."""
    full = f'userName sw "{people["m"]}" and ({filt})'
    r = scim.get("/Users", params={"filter": full, **params})
    assert r.status_code == 200, (filt, r.text)
    body = r.json()
    assert body["totalResults"] == len(body["Resources"])
    by_id = {people[k]["id"]: k for k in ("alice", "bob", "carol")}
    return sorted(by_id[x["id"]] for x in body["Resources"])


CASES = [
    ('displayName eq "Alice"', ["alice"]),
    ('displayName ne "Alice"', ["bob", "carol"]),
    ('userName co "-BOB@"', ["bob"]),
    ('displayName sw "Ca"', ["carol"]),
    ('userName ew "EXAMPLE.COM"', ["alice", "bob", "carol"]),
    ('displayName gt "Alice"', ["bob", "carol"]),
    ('displayName ge "Bob"', ["bob", "carol"]),
    ('displayName lt "Bob"', ["alice"]),
    ('displayName le "Bob"', ["alice", "bob"]),
    ("title pr", ["alice", "bob"]),
    ("externalId pr", ["alice", "bob"]),
    ("not (title pr)", ["carol"]),
    ("active eq false", ["bob"]),
    ("active eq true", ["alice", "carol"]),
    ("active ne true", ["bob"]),
    # precedence: and binds tighter than or
    ('title eq "Engineer" or title eq "Manager" and active eq true', ["alice"]),
    ('title eq "Manager" and active eq true or displayName eq "Carol"', ["carol"]),
    ('(title eq "Engineer" or title eq "Manager") and active eq false', ["bob"]),
    ('not (displayName eq "Alice" or displayName eq "Bob")', ["carol"]),
    ('not (displayName eq "Alice") and not (displayName eq "Bob")', ["carol"]),
    # complex attribute filters
    ('emails[type eq "work" and value co "@example.com"]', ["alice"]),
    ('emails[type eq "home"]', ["alice", "carol"]),
    ('emails[type eq "work" or value ew ".org"]', ["alice", "bob"]),
    ('emails.value co "@example.com"', ["alice", "carol"]),
    ('emails.type eq "work"', ["alice", "bob"]),
    ("emails.primary eq true", ["alice"]),
    ('emails[type eq "work"].value eq "bob@other.net"', ["bob"]),  # Entra's non-ABNF form
    ('name.familyName eq "smith"', ["alice"]),
    # URN-qualified
    (f'{ENT}:employeeNumber eq "200"', ["bob"]),
    (f'{ENT}:employeeNumber ge "200"', ["bob", "carol"]),
    (f"{ENT}:department pr", ["alice"]),
    (f'{USER}:displayName eq "Carol"', ["carol"]),
    # names are case-insensitive (RFC 7643 §2.1), operators too
    ('DISPLAYNAME EQ "alice"', ["alice"]),
]


@pytest.mark.parametrize("filt,expected", CASES, ids=[c[0] for c in CASES])
def test_filter_operators(
    scim: httpx.Client, people: dict[str, Any], filt: str, expected: list[str]
) -> None:
    assert names(scim, people, filt) == expected


def test_user_name_case_insensitive_external_id_case_exact(
    scim: httpx.Client, people: dict[str, Any]
) -> None:
    m = people["m"]
    upper = people["alice"]["userName"].upper()
    r = scim.get("/Users", params={"filter": f'userName eq "{upper}"'}).json()
    assert [x["id"] for x in r["Resources"]] == [people["alice"]["id"]]
    assert names(scim, people, f'externalId eq "Ext-{m}-A"') == ["alice"]
    assert names(scim, people, f'externalId eq "ext-{m}-a"') == []
    assert names(scim, people, f'externalId eq "ext-{m}-b"') == ["bob"]
    assert names(scim, people, f'externalId eq "EXT-{m}-B"') == []


def test_user_name_lookup_pages_like_any_filter(scim: httpx.Client, people: dict[str, Any]) -> None:
    """`userName eq` (the IdP's lookup) is answered by one indexed read; paging, the URN
    form and the groups of the found user behave as for any other filter."""
    alice = people["alice"]
    upper = alice["userName"].upper()
    r = scim.get("/Users", params={"filter": f'{USER}:userName eq "{upper}"'}).json()
    assert r["totalResults"] == 1 and [x["id"] for x in r["Resources"]] == [alice["id"]]
    assert r["Resources"][0] == scim.get(f"/Users/{alice['id']}").json()
    r = scim.get("/Users", params={"filter": f'userName eq "{upper}"', "startIndex": 2}).json()
    assert r["totalResults"] == 1 and r.get("Resources", []) == []
    r = scim.get("/Users", params={"filter": f'userName eq "{upper}"', "count": 0}).json()
    assert r["totalResults"] == 1 and r.get("Resources", []) == []
    u = post(scim, "/Users", {"schemas": [USER], "userName": f"Lk-{tag()}"})
    for n in range(2):
        post(scim, "/Groups", {"displayName": f"lk-{n}-{tag()}", "members": [{"value": u["id"]}]})
    r = scim.get("/Users", params={"filter": f'userName eq "{u["userName"].lower()}"'}).json()
    [found] = r["Resources"]
    assert found == scim.get(f"/Users/{u['id']}").json() and len(found["groups"]) == 2
    r = scim.get("/Users", params={"filter": 'userName eq "nobody-at-all"'}).json()
    assert r["totalResults"] == 0
    r = scim.get("/Groups", params={"filter": f'displayName eq "{upper}"'}).json()
    assert r["totalResults"] == 0


def test_meta_last_modified(scim: httpx.Client, people: dict[str, Any]) -> None:
    stamp = people["alice"]["meta"]["lastModified"]
    assert names(scim, people, f'meta.lastModified gt "{stamp}"') == ["bob", "carol"]
    assert names(scim, people, f'meta.lastModified ge "{stamp}"') == ["alice", "bob", "carol"]
    assert names(scim, people, f'meta.lastModified lt "{stamp}"') == []
    assert names(scim, people, 'meta.lastModified gt "2000-01-01T00:00:00Z"') == [
        "alice",
        "bob",
        "carol",
    ]
    # a later modification moves the user past the stamp of the others
    later = people["carol"]["meta"]["lastModified"]
    r = scim.patch(
        f"/Users/{people['alice']['id']}",
        json={"Operations": [{"op": "replace", "path": "title", "value": "Lead"}]},
    )
    assert r.status_code == 200
    assert names(scim, people, f'meta.lastModified gt "{later}"') == ["alice"]


def test_group_filters(scim: httpx.Client, people: dict[str, Any]) -> None:
    m = people["m"]
    g = post(
        scim,
        "/Groups",
        {
            "schemas": [GROUP],
            "displayName": f"{m} Team",
            "members": [{"value": people["alice"]["id"]}],
        },
    )
    for filt in (
        f'displayName eq "{m} team"',
        f'displayName sw "{m}"',
        f'members.value eq "{people["alice"]["id"]}"',
        f'members[value eq "{people["alice"]["id"]}"]',
        f'id eq "{g["id"]}"',
    ):
        r = scim.get("/Groups", params={"filter": filt, "excludedAttributes": "members"})
        assert r.status_code == 200, (filt, r.text)
        assert [x["id"] for x in r.json()["Resources"]] == [g["id"]], filt
    # users can be filtered by their (read-only) groups
    assert names(scim, people, f'groups.value eq "{g["id"]}"') == ["alice"]


INVALID = [
    "userName eq",
    'userName xx "a"',
    '(userName eq "a"',
    'userName eq "a")',
    'userName eq "unterminated',
    'emails[type eq "work"',
    'nosuchattribute eq "x"',
    'userName eq "a" and',
    "and",
    "",
    'userName eq "a" userName eq "b"',
    'emails[type eq "work"] eq "x"',
    "name pr and",
    "userName gt true",
    'active eq "yes"',
    'meta.lastModified gt "yesterday"',
    "userName eq 12",
    'emails[value[type eq "x"]]',
    "(" * 300 + 'userName eq "a"' + ")" * 300,
]


@pytest.mark.parametrize("filt", INVALID)
def test_invalid_filters_are_400_invalid_filter(scim: httpx.Client, filt: str) -> None:
    for path in ("/Users", "/Groups"):
        r = scim.get(path, params={"filter": filt})
        if filt == "":
            assert r.status_code in (200, 400)
            continue
        assert r.status_code == 400, (path, filt, r.text)
        body = r.json()
        assert body["schemas"] == [ERROR] and body["status"] == "400"
        assert body["scimType"] == "invalidFilter", (path, filt, body)


# --- sorting and paging ----------------------------------------------------------------------


def test_sort(scim: httpx.Client, people: dict[str, Any]) -> None:
    m = people["m"]
    base = {"filter": f'userName sw "{m}"'}

    def order(**params: Any) -> list[str]:
        r = scim.get("/Users", params={**base, **params})
        assert r.status_code == 200, r.text
        ids = {people[k]["id"]: k for k in ("alice", "bob", "carol")}
        return [ids[x["id"]] for x in r.json()["Resources"]]

    assert order(sortBy="userName") == ["alice", "bob", "carol"]  # case-insensitive
    assert order(sortBy="userName", sortOrder="descending") == ["carol", "bob", "alice"]
    assert order(sortBy="name.familyName") == ["carol", "bob", "alice"]
    assert order(sortBy="name.familyName", sortOrder="DESCENDING") == ["alice", "bob", "carol"]
    assert order(sortBy="meta.created") == ["alice", "bob", "carol"]
    assert order(sortBy=f"{ENT}:employeeNumber", sortOrder="descending") == [
        "carol",
        "bob",
        "alice",
    ]
    assert order(sortBy="emails.value") == ["alice", "bob", "carol"]  # primary/first value
    # unset values sort last ascending (RFC 7644 §3.4.2.3)
    assert order(sortBy="title") == ["alice", "bob", "carol"]
    r = scim.get("/Users", params={**base, "sortOrder": "sideways"})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidValue"
    r = scim.get("/Users", params={**base, "sortBy": "nosuch"})
    assert r.status_code == 400 and r.json()["schemas"] == [ERROR]


def test_paging_exact_totals_and_stable_order(scim: httpx.Client) -> None:
    m = f"p{tag()}"
    ids = {post(scim, "/Users", {"userName": f"{m}-{i:02d}"})["id"] for i in range(7)}
    filt = {"filter": f'userName sw "{m}"'}
    seen: list[str] = []
    start = 1
    while True:
        r = scim.get("/Users", params={**filt, "startIndex": start, "count": 3})
        body = r.json()
        assert body["totalResults"] == 7 and body["startIndex"] == start
        assert body["itemsPerPage"] == len(body["Resources"])
        if not body["Resources"]:
            break
        seen += [x["id"] for x in body["Resources"]]
        start += body["itemsPerPage"]
    assert len(seen) == 7 and set(seen) == ids
    # same walk again: same order
    again = scim.get("/Users", params={**filt, "count": 100}).json()
    assert [x["id"] for x in again["Resources"]] == seen

    zero = scim.get("/Users", params={**filt, "count": 0}).json()
    assert zero["totalResults"] == 7 and zero["itemsPerPage"] == 0
    assert zero.get("Resources", []) == []
    for bad_start in (0, -5):
        r = scim.get("/Users", params={**filt, "startIndex": bad_start, "count": 2}).json()
        assert r["startIndex"] == 1
        assert [x["id"] for x in r["Resources"]] == seen[:2]
    past = scim.get("/Users", params={**filt, "startIndex": 50}).json()
    assert past["totalResults"] == 7 and past["Resources"] == []
    neg = scim.get("/Users", params={**filt, "count": -1}).json()
    assert neg["totalResults"] == 7 and neg["itemsPerPage"] == 0
    r = scim.get("/Users", params={**filt, "count": "ten"})
    assert r.status_code == 400 and r.json()["schemas"] == [ERROR]


def test_okta_import_walk_whole_collection(scim: httpx.Client) -> None:
    """Okta import: startIndex=1&count=100, then +100 … until totalResults; integers only."""
    for _ in range(3):
        post(scim, "/Users", {"userName": f"imp-{tag()}"})
    first = scim.get("/Users", params={"startIndex": 1, "count": 2})
    total = first.json()["totalResults"]
    assert isinstance(total, int) and total >= 3
    seen: list[str] = []
    start = 1
    while start <= total:
        body = scim.get("/Users", params={"startIndex": start, "count": 25}).json()
        assert body["totalResults"] == total
        assert isinstance(body["startIndex"], int) and isinstance(body["itemsPerPage"], int)
        seen += [x["id"] for x in body["Resources"]]
        start += 25
    assert len(seen) == total == len(set(seen))


# --- attribute projection ---------------------------------------------------------------------


def test_attributes_and_excluded_attributes(scim: httpx.Client, people: dict[str, Any]) -> None:
    uid = people["alice"]["id"]
    r = scim.get(f"/Users/{uid}", params={"attributes": "userName,emails.value"}).json()
    assert set(r) - {"meta"} == {"schemas", "id", "userName", "emails"}
    assert r["emails"] == [{"value": "alice@example.com"}, {"value": "alice@home.org"}]
    r = scim.get(f"/Users/{uid}", params={"attributes": f"{ENT}:employeeNumber"}).json()
    assert r[ENT] == {"employeeNumber": "100"} and "userName" not in r
    r = scim.get(f"/Users/{uid}", params={"excludedAttributes": "emails,name,id"}).json()
    assert "emails" not in r and "name" not in r and r["id"] == uid  # id is returned always
    assert r["userName"] == people["alice"]["userName"]
    r = scim.get(f"/Users/{uid}", params={"excludedAttributes": "name.givenName"}).json()
    assert r["name"] == {"familyName": "Smith"}
    # on lists too
    r = scim.get("/Users", params={"filter": f'id eq "{uid}"', "attributes": "displayName"}).json()
    assert set(r["Resources"][0]) - {"meta"} == {"schemas", "id", "displayName"}


def test_excluded_members_on_groups(scim: httpx.Client, people: dict[str, Any]) -> None:
    g = post(
        scim,
        "/Groups",
        {"displayName": f"{people['m']}-ex", "members": [{"value": people["bob"]["id"]}]},
    )
    one = scim.get(f"/Groups/{g['id']}", params={"excludedAttributes": "members"})
    assert one.status_code == 200 and "members" not in one.json()
    assert one.json()["displayName"] == g["displayName"]
    listed = scim.get(
        "/Groups", params={"filter": f'id eq "{g["id"]}"', "excludedAttributes": "members"}
    ).json()
    assert "members" not in listed["Resources"][0]
    only = scim.get(f"/Groups/{g['id']}", params={"attributes": "members"}).json()
    assert [x["value"] for x in only["members"]] == [people["bob"]["id"]]
    assert "displayName" not in only
    full = scim.get(f"/Groups/{g['id']}").json()
    assert [x["value"] for x in full["members"]] == [people["bob"]["id"]]


def test_password_never_returned(scim: httpx.Client) -> None:
    name = f"pw-{tag()}"
    r = scim.post("/Users", json={"userName": name, "password": "Hunter2!x"})
    assert r.status_code == 201 and "password" not in r.json()
    uid = r.json()["id"]
    for resp in (
        scim.get(f"/Users/{uid}", params={"attributes": "password"}),
        scim.get(
            "/Users", params={"filter": f'userName eq "{name}"', "attributes": "password,userName"}
        ),
        scim.put(f"/Users/{uid}", json={"userName": name, "password": "x2!Y"}),
        scim.patch(
            f"/Users/{uid}",
            json={"Operations": [{"op": "replace", "path": "password", "value": "z"}]},
        ),
    ):
        assert resp.status_code == 200, resp.text
        assert "password" not in resp.text and "Hunter2" not in resp.text
    r = scim.get("/Users", params={"filter": 'password eq "Hunter2!x"'})
    assert r.status_code == 400 or r.json()["totalResults"] == 0


def test_non_ascii_user_name_case_insensitive(scim: httpx.Client) -> None:
    m = tag()
    u = post(
        scim, "/Users", {"userName": f"ÄNNE.Ørsted.{m}@Example.com", "displayName": f"ÉLODIE {m}"}
    )
    for filt in (
        f'userName eq "änne.ørsted.{m}@example.com"',
        f'userName sw "änne.ø"  and userName ew "{m}@example.com"',
        f'displayName eq "élodie {m}"',
        f'displayName co "LODIE {m}"',
    ):
        r = scim.get("/Users", params={"filter": filt})
        assert [x["id"] for x in r.json()["Resources"]] == [u["id"]], filt
    r = scim.post("/Users", json={"userName": f"änne.ørsted.{m}@example.com"})
    assert r.status_code == 409


def test_root_search_pages_across_types(scim: httpx.Client) -> None:
    m = tag()
    users = [post(scim, "/Users", {"userName": f"root-{m}-{i}"})["id"] for i in range(2)]
    groups = [
        post(scim, "/Groups", {"displayName": f"root-{m}-{i}", "externalId": f"x{m}"})["id"]
        for i in range(2)
    ]
    filt = " or ".join(f'id eq "{i}"' for i in users + groups)
    seen: list[str] = []
    for start in (1, 3):
        r = scim.post(
            "/.search",
            json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": filt,
                "startIndex": start,
                "count": 2,
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["totalResults"] == 4 and body["itemsPerPage"] == 2
        seen += [x["id"] for x in body["Resources"]]
    assert sorted(seen) == sorted(users + groups)
    r = scim.post("/.search", json={"filter": filt, "startIndex": 2, "count": 2})
    assert [x["id"] for x in r.json()["Resources"]] == seen[1:3]
