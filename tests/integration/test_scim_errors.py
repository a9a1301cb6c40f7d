"""Errors, ETags and robustness over real HTTP: every failure is an RFC 7644 §3.12 body,
nothing is ever a 500, and a rejected write leaves the store unchanged."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.fixtures.server import ScimServer
from tests.support.scim import (
    ERROR_SCHEMA as ERROR,
    PATCH_SCHEMA as PATCH,
    new_group,
    new_user,
    tag,
)


def assert_error(r: httpx.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/scim+json"), r.headers
    body = r.json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in r.text
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body


def count_users(scim: httpx.Client, prefix: str) -> int:
    return int(
        scim.get("/Users", params={"filter": f'userName sw "{prefix}"', "count": 0}).json()[
            "totalResults"
        ]
    )


# --- 401 -------------------------------------------------------------------------------------


def test_401_missing_or_bad_token(scim_server: ScimServer) -> None:
    with httpx.Client(base_url=scim_server.base_url, timeout=10) as anon:
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": "Basic Zm9vOmJhcg=="},
            {"Authorization": f"Bearer {scim_server.token}x"},
            {"Authorization": "Bearer"},
        ):
            for method, path in (
                ("GET", "/Users"),
                ("POST", "/Users"),
                ("GET", "/Users/x"),
                ("GET", "/ServiceProviderConfig"),
                ("POST", "/Bulk"),
                ("GET", "/Schemas"),
            ):
                r = anon.request(
                    method,
                    path,
                    headers=headers,
                    json={"userName": "x"} if method == "POST" else None,
                )
                assert_error(r, 401)
                assert r.headers["www-authenticate"].startswith("Bearer")
        # the token works with any scheme case
        r = anon.get("/Users", headers={"Authorization": f"bearer {scim_server.token}"})
        assert r.status_code == 200


# --- 404 / 405 -------------------------------------------------------------------------------


def test_404_unknown_id_and_endpoint(scim: httpx.Client) -> None:
    for path in ("/Users/0", f"/Users/{uuid.uuid4()}", f"/Groups/{uuid.uuid4()}"):
        assert_error(scim.get(path), 404)
        assert_error(scim.delete(path), 404)
        body = {"userName": "x"} if path.startswith("/Users") else {"displayName": "x"}
        assert_error(scim.put(path, json=body), 404)
        assert_error(
            scim.patch(
                path, json={"Operations": [{"op": "replace", "path": "displayName", "value": "x"}]}
            ),
            404,
        )
    assert_error(scim.get("/Nope"), 404)
    assert_error(scim.get("/Users/a/b"), 404)


def test_405(scim: httpx.Client) -> None:
    u = new_user(scim)
    assert_error(scim.put("/Users", json={}), 405)
    assert_error(scim.delete("/Groups"), 405)
    assert_error(scim.patch("/Users", json={}), 405)
    assert_error(scim.post(f"/Users/{u['id']}", json={}), 405)
    assert_error(scim.delete("/ServiceProviderConfig"), 405)
    assert_error(scim.get("/Bulk"), 405)


# --- 409 -------------------------------------------------------------------------------------


def test_409_uniqueness(scim: httpx.Client) -> None:
    u = new_user(scim)
    prefix = u["userName"]
    assert_error(scim.post("/Users", json={"userName": u["userName"]}), 409, "uniqueness")
    assert_error(scim.post("/Users", json={"userName": u["userName"].upper()}), 409, "uniqueness")
    other = new_user(scim)
    assert_error(
        scim.put(f"/Users/{other['id']}", json={"userName": u["userName"].title()}),
        409,
        "uniqueness",
    )
    assert count_users(scim, prefix) == 1
    g = new_group(scim)
    assert_error(scim.post("/Groups", json={"displayName": g["displayName"]}), 409, "uniqueness")
    assert_error(
        scim.post("/Groups", json={"displayName": g["displayName"].upper()}), 409, "uniqueness"
    )
    # renaming to the same name (own resource) is fine; case change too
    r = scim.put(f"/Users/{u['id']}", json={"userName": u["userName"].upper()})
    assert r.status_code == 200 and r.json()["userName"] == u["userName"].upper()


# --- ETags -----------------------------------------------------------------------------------


def test_etags(scim: httpx.Client) -> None:
    u = new_user(scim)
    uid = u["id"]
    r = scim.get(f"/Users/{uid}")
    tag1 = r.headers["etag"]
    assert tag1 == r.json()["meta"]["version"] and tag1.startswith('W/"')
    r = scim.get(f"/Users/{uid}", headers={"If-None-Match": tag1})
    assert r.status_code == 304 and r.content == b""
    assert scim.get(f"/Users/{uid}", headers={"If-None-Match": 'W/"nope"'}).status_code == 200
    stale = 'W/"999"'
    patch = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}
    assert_error(scim.patch(f"/Users/{uid}", json=patch, headers={"If-Match": stale}), 412)
    assert_error(
        scim.put(
            f"/Users/{uid}",
            json={"userName": u["userName"], "title": "y"},
            headers={"If-Match": stale},
        ),
        412,
    )
    assert_error(scim.delete(f"/Users/{uid}", headers={"If-Match": stale}), 412)
    assert scim.get(f"/Users/{uid}").json() == r.json() if r.status_code == 200 else True
    now = scim.get(f"/Users/{uid}").json()
    assert now["meta"]["version"] == tag1 and "title" not in now
    r = scim.patch(f"/Users/{uid}", json=patch, headers={"If-Match": tag1})
    assert r.status_code == 200
    tag2 = r.headers["etag"]
    assert tag2 != tag1 and tag2 == r.json()["meta"]["version"]
    r = scim.put(f"/Users/{uid}", json={"userName": u["userName"]}, headers={"If-Match": tag2})
    assert r.status_code == 200
    assert scim.delete(f"/Users/{uid}", headers={"If-Match": tag1}).status_code == 412
    assert scim.delete(f"/Users/{uid}", headers={"If-Match": "*"}).status_code == 204
    # groups: membership changes move the version too
    g = new_group(scim)
    v = new_user(scim)
    r = scim.patch(
        f"/Groups/{g['id']}",
        json={"Operations": [{"op": "add", "path": "members", "value": [{"value": v["id"]}]}]},
        headers={"If-Match": g["meta"]["version"]},
    )
    assert r.status_code == 204
    assert r.headers["etag"] != g["meta"]["version"]
    assert r.headers["etag"] == scim.get(f"/Groups/{g['id']}").json()["meta"]["version"]
    assert_error(
        scim.patch(
            f"/Groups/{g['id']}",
            json={"Operations": [{"op": "remove", "path": "members"}]},
            headers={"If-Match": g["meta"]["version"]},
        ),
        412,
    )


# --- 413 / 415 / 400 -------------------------------------------------------------------------


def test_413_huge_body(scim: httpx.Client) -> None:
    prefix = f"big-{tag()}"
    body = json.dumps({"userName": prefix, "displayName": "x" * 2_000_000})
    assert_error(scim.post("/Users", content=body), 413)
    assert count_users(scim, prefix) == 0

    def chunks() -> Any:  # no Content-Length: streamed
        yield b'{"userName": "' + prefix.encode() + b'", "displayName": "'
        for _ in range(300):
            yield b"y" * 10_000
        yield b'"}'

    assert_error(scim.post("/Users", content=chunks()), 413)
    assert count_users(scim, prefix) == 0


def test_415(scim: httpx.Client) -> None:
    prefix = f"tp-{tag()}"
    body = json.dumps({"userName": prefix})
    r = scim.post("/Users", content=body, headers={"Content-Type": "text/plain"})
    assert_error(r, 415)
    r = scim.post("/Users", content=body, headers={"Content-Type": "application/xml"})
    assert_error(r, 415)
    assert count_users(scim, prefix) == 0
    # both SCIM and plain JSON media types, with parameters
    for ctype in (
        "application/scim+json; charset=utf-8",
        "application/json",
        "Application/SCIM+JSON",
    ):
        r = scim.post(
            "/Users",
            content=json.dumps({"userName": f"{prefix}-{tag()}"}),
            headers={"Content-Type": ctype},
        )
        assert r.status_code == 201, (ctype, r.text)


@pytest.mark.parametrize(
    "raw,scim_type",
    [
        (b"{", "invalidSyntax"),
        (b"not json", "invalidSyntax"),
        (b"", "invalidSyntax"),
        (b"[]", "invalidSyntax"),
        (b'"a string"', "invalidSyntax"),
        (b"null", "invalidSyntax"),
        (b"42", "invalidSyntax"),
        (b'{"userName": "a", "userName": }', "invalidSyntax"),
        (b"\xff\xfe{}", "invalidSyntax"),
        (b"[" * 10_000 + b"]" * 10_000, "invalidSyntax"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, None),
        (b"{}", "invalidValue"),
        (b'{"userName": 5}', "invalidValue"),
        (b'{"userName": "x", "active": "maybe"}', "invalidValue"),
        (b'{"userName": "x", "emails": "a@b"}', "invalidValue"),
        (b'{"userName": "x", "nosuchattr": 1}', "invalidValue"),
        (b'{"userName": "x", "name": {"nosuch": "y"}}', "invalidValue"),
        (b'{"userName": "x", "emails": [[{"value": "a"}]]}', "invalidValue"),
        (
            b'{"userName": "x", "emails": [{"value": "a", "primary": true}, {"value": "b", "primary": true}]}',
            "invalidValue",
        ),
        (b'{"userName": "x", "schemas": 5}', "invalidValue"),
        (b'{"userName": "x", "UserName": "y"}', "invalidValue"),
        (b'{"userName": "' + b"x" * 70_000 + b'"}', "invalidValue"),
    ],
)
def test_400_bad_user_bodies(scim: httpx.Client, raw: bytes, scim_type: str | None) -> None:
    u = new_user(scim, title="keep")
    before = scim.get(f"/Users/{u['id']}").json()
    total = scim.get("/Users", params={"count": 0}).json()["totalResults"]
    for method, path in (("POST", "/Users"), ("PUT", f"/Users/{u['id']}")):
        r = scim.request(method, path, content=raw)
        assert_error(r, 400, scim_type)
    paths = [("PATCH", f"/Users/{u['id']}"), ("POST", "/Bulk")]
    if scim_type == "invalidSyntax":  # a SearchRequest ignores unknown keys
        paths.append(("POST", "/Users/.search"))
    for method, path in paths:
        r = scim.request(method, path, content=raw)
        assert 400 <= r.status_code < 500, (path, r.text)
        assert r.json()["schemas"] == [ERROR]
    assert scim.get(f"/Users/{u['id']}").json() == before
    assert scim.get("/Users", params={"count": 0}).json()["totalResults"] == total


def test_put_id_change_is_mutability(scim: httpx.Client) -> None:
    u = new_user(scim)
    r = scim.put(f"/Users/{u['id']}", json={"id": str(uuid.uuid4()), "userName": u["userName"]})
    assert_error(r, 400, "mutability")
    g = new_group(scim)
    r = scim.put(f"/Groups/{g['id']}", json={"id": "x", "displayName": g["displayName"]})
    assert_error(r, 400, "mutability")
    assert scim.get(f"/Users/{u['id']}").json() == u


def test_bad_group_bodies(scim: httpx.Client) -> None:
    g = new_group(scim)
    before = scim.get(f"/Groups/{g['id']}").json()
    x = f"x-{tag()}"
    for body in (
        {},
        {"displayName": 5},
        {"displayName": x, "members": "y"},
        {"displayName": x, "members": [{"value": 5}]},
        {"displayName": x, "members": [{"display": "no value"}]},
        {"displayName": x, "members": [{"value": g["id"], "type": "Robot"}]},
        {"displayName": x, "members": [{"value": str(uuid.uuid4())}]},
    ):
        for method, path in (("POST", "/Groups"), ("PUT", f"/Groups/{g['id']}")):
            r = scim.request(method, path, json=body)
            assert_error(r, 400, "invalidValue")
    # a group cannot contain itself
    r = scim.put(f"/Groups/{g['id']}", json={"displayName": x, "members": [{"value": g["id"]}]})
    assert_error(r, 400, "invalidValue")
    assert (
        scim.get("/Groups", params={"filter": f'displayName eq "{x}"'}).json()["totalResults"] == 0
    )
    assert scim.get(f"/Groups/{g['id']}").json() == before


def test_query_parameter_errors(scim: httpx.Client) -> None:
    for params in (
        {"startIndex": "x"},
        {"count": "1.5"},
        {"sortOrder": "up"},
        {"filter": 'userName eq "a" and'},
        {"sortBy": "nosuch"},
    ):
        r = scim.get("/Users", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["schemas"] == [ERROR]


# --- never a 500 -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "userName",
                    "displayName",
                    "emails",
                    "members",
                    "value",
                    "op",
                    "path",
                    "Operations",
                    "schemas",
                    "name",
                    "type",
                    "primary",
                    "active",
                    "id",
                    "meta",
                    "externalId",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                    "manager",
                    "x",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)
patch_ops = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "replace", "remove", "Add", "bogus"])},
        optional={
            "path": st.sampled_from(
                [
                    "title",
                    "emails",
                    'emails[type eq "work"].value',
                    "members",
                    'members[value eq "x"]',
                    "name.givenName",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
                    "active",
                    "id",
                    "meta",
                    "[",
                    "emails[",
                    "x.y.z",
                ]
            )
            | st.text(max_size=12),
            "value": json_values,
        },
    ),
    max_size=4,
)


TARGETS = [
    "POST /Users",
    "PUT /Users/{uid}",
    "PATCH /Users/{uid}",
    "POST /Groups",
    "PUT /Groups/{gid}",
    "PATCH /Groups/{gid}",
    "POST /Bulk",
    "POST /Users/.search",
]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.sampled_from(TARGETS), body=json_values, ops=patch_ops)
def test_random_json_never_500(
    scim: httpx.Client, target: str, body: Any, ops: list[dict[str, Any]]
) -> None:
    u = getattr(test_random_json_never_500, "_ids", None)
    if u is None or u["base"] != str(scim.base_url):
        u = {"base": str(scim.base_url), "uid": new_user(scim)["id"], "gid": new_group(scim)["id"]}
        test_random_json_never_500._ids = u  # type: ignore[attr-defined]
    method, path = target.format(**u).split(" ")
    requests = [(method, path, body)]
    if method == "PATCH":  # also a well-formed PatchOp with random operations
        requests.append((method, path, {"schemas": [PATCH], "Operations": ops}))
    for method, path, payload in requests:
        r = scim.request(method, path, json=payload)
        assert r.status_code < 500, (method, path, payload, r.text)
        assert "Traceback" not in r.text
        if r.status_code >= 400:
            assert r.json()["schemas"] == [ERROR]
        elif method == "POST" and r.status_code == 201:
            scim.delete(r.headers["location"].split("/scim/v2", 1)[1])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    filt=st.text(
        alphabet=st.sampled_from(list('abcdefgimnoprstuvwxyzEN()[]." \\:0123456789-')), max_size=40
    )
)
def test_random_filters_never_500(scim: httpx.Client, filt: str) -> None:
    for path in ("/Users", "/Groups"):
        r = scim.get(path, params={"filter": filt, "sortBy": filt[:10] or None})
        assert r.status_code < 500, (filt, r.text)
