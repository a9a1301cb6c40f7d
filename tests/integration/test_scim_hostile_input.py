"""Issue 8's hostile SCIM probes, replayed over real HTTP against a real `scimgate serve`
(SQLite and PostgreSQL): lone UTF-16 surrogates and NUL in every stored string, Bulk with a
bad operation after a good one, `.search` parameters of the wrong type, unbounded client
headers. Every answer is a 2xx or an RFC 7644 §3.12 error body, never a 500, and a refused
request leaves the store and the audit trail as they were.

Bodies are sent as bytes: ``json.dumps`` writes ``"\\ud800"`` as that escape, and a raw
surrogate can only be sent as its UTF-8-style bytes (``ED A0 80``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from scimgate.audit.log import verify
from scimgate.store import tables
from tests.fixtures.server import ScimServer
from tests.support.scim import (
    BULK_REQUEST_SCHEMA as BULK,
    ENTERPRISE_SCHEMA as ENTERPRISE,
    ERROR_SCHEMA as ERROR,
    PATCH_SCHEMA as PATCH,
    SEARCH_SCHEMA as SEARCH,
    USER_SCHEMA as USER,
    tag,
)

LONE = "\ud800"  # a lone high surrogate; json.dumps writes it as the escape \ud800


def send(scim: httpx.Client, method: str, path: str, body: Any, **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return scim.request(method, path, content=content, **kw)


def scim_error(r: httpx.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()  # the response is well-formed UTF-8 JSON
    assert body["schemas"] == [ERROR] and body["status"] == str(status), body
    assert isinstance(body["detail"], str) and "Traceback" not in r.text
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body


@pytest.fixture
def store(scim_server: ScimServer) -> Iterator[sa.Engine]:
    engine = sa.create_engine(scim_server.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


# Events the server's own threads append at any moment (the sync engine's applied batches,
# resyncs and drift repairs, live-session cuts, the once-a-minute failed-auth summary): not
# caused by the request under test, so they are left out of the request's event count.
BACKGROUND_KINDS = ("sync.", "session.", "node.", "jwt.keys", "auth.failed")


def snapshot(engine: sa.Engine) -> tuple[int, int, int, int]:
    """Users, groups, memberships, request-caused audit events: what a refused request must
    not change."""
    ev = tables.audit_events
    background = sa.or_(*(ev.c.kind.startswith(k) for k in BACKGROUND_KINDS))
    with engine.connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(tables.users)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(tables.groups)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(tables.members)).scalar_one(),
            conn.execute(
                sa.select(sa.func.count()).select_from(ev).where(~background)
            ).scalar_one(),
        )


# --- the Bulk probe: one good operation, then a lone surrogate -----------------------------


def test_bulk_valid_then_lone_surrogate_is_200_with_each_status(
    scim: httpx.Client, store: sa.Engine
) -> None:
    good, before = f"bulk-ok-{tag()}", snapshot(store)
    r = send(scim, "POST", "/Bulk", {"schemas": [BULK], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"userName": good}},
        {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"userName": "x" + LONE}},
    ]})  # fmt: skip
    assert r.status_code == 200, r.text
    first, second = r.json()["Operations"]
    assert first["status"] == "201" and first["bulkId"] == "a"
    assert second["status"] == "400" and second["bulkId"] == "b"
    assert second["response"]["schemas"] == [ERROR]
    assert second["response"]["scimType"] == "invalidValue"
    assert "surrogate" in second["response"]["detail"]
    # operation 1 is stored (and findable), operation 2 left nothing behind
    found = scim.get("/Users", params={"filter": f'userName eq "{good}"'}).json()
    assert found["totalResults"] == 1
    after = snapshot(store)
    assert after[0] == before[0] + 1 and after[3] == before[3] + 1  # one user, one event


def test_bulk_raw_surrogate_bytes_and_nul_fail_alone(scim: httpx.Client) -> None:
    good = f"bulk-raw-{tag()}"
    body = (
        b'{"schemas":["%s"],"Operations":['
        b'{"method":"POST","path":"/Users","bulkId":"a","data":{"userName":"%s"}},'
        b'{"method":"POST","path":"/Users","bulkId":"b","data":{"userName":"nul\\u0000"}},'
        b'{"method":"POST","path":"/Groups","bulkId":"c","data":{"displayName":"%s",'
        b'"members":[{"value":"bulkId:a"}]}}]}'
    ) % (BULK.encode(), good.encode(), good.encode())
    r = send(scim, "POST", "/Bulk", body)
    assert r.status_code == 200, r.text
    assert [op["status"] for op in r.json()["Operations"]] == ["201", "400", "201"]
    # raw surrogate bytes anywhere make the body non-UTF-8: nothing is processed
    raw = body.replace(b"nul\\u0000", b"x\xed\xa0\x80")
    scim_error(send(scim, "POST", "/Bulk", raw), 400, "invalidSyntax")


# --- a lone surrogate (or NUL) in each stored attribute ------------------------------------


def user_bodies(bad: str) -> list[dict[str, Any]]:
    name = f"s-{tag()}"
    return [
        {"schemas": [USER], "userName": "alice" + bad},
        {"schemas": [USER], "userName": name, "displayName": bad},
        {"schemas": [USER], "userName": name, "emails": [{"value": bad + "@x.org"}]},
        {"schemas": [USER], "userName": name, "externalId": bad},
        {"schemas": [USER], "userName": name, "name": {"givenName": bad}},
        {"schemas": [USER, ENTERPRISE], "userName": name, ENTERPRISE: {"department": bad}},
        {"schemas": [USER], "userName": name, bad: "an unknown key"},
    ]


@pytest.mark.parametrize("bad", [LONE, "\udfff", "\x00"], ids=["high", "low", "nul"])
def test_bad_text_in_each_stored_attribute_is_400(
    scim: httpx.Client, store: sa.Engine, bad: str
) -> None:
    user = scim.post("/Users", json={"userName": f"target-{tag()}"}).json()
    group = scim.post("/Groups", json={"displayName": f"target-{tag()}"}).json()
    before = snapshot(store)
    for body in user_bodies(bad):
        scim_error(send(scim, "POST", "/Users", body), 400, "invalidValue")
        scim_error(send(scim, "PUT", f"/Users/{user['id']}", body), 400, "invalidValue")
    scim_error(send(scim, "POST", "/Groups", {"displayName": "g" + bad}), 400, "invalidValue")
    scim_error(
        send(scim, "PUT", f"/Groups/{group['id']}", {"displayName": bad}), 400, "invalidValue"
    )
    patches = [
        {"op": "replace", "path": "displayName", "value": bad},
        {"op": "replace", "value": {"userName": bad}},
        {"op": "add", "path": "emails", "value": [{"value": bad}]},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": bad},
        {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": bad},
    ]
    for op in patches:
        r = send(scim, "PATCH", f"/Users/{user['id']}", {"schemas": [PATCH], "Operations": [op]})
        scim_error(r, 400, "invalidValue")
    for op in (
        {"op": "replace", "path": "displayName", "value": bad},
        {"op": "add", "path": "members", "value": [{"value": bad}]},
        {"op": "remove", "path": f'members[value eq "{bad}"]'},
    ):
        r = send(scim, "PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH], "Operations": [op]})
        scim_error(r, 400, "invalidValue")
    r = send(
        scim, "POST", "/Users/.search", {"schemas": [SEARCH], "filter": f'userName eq "{bad}"'}
    )
    scim_error(r, 400, "invalidValue")
    assert snapshot(store) == before  # no partial commit, no audit event


def test_surrogate_in_a_key_is_echoed_safely(scim: httpx.Client) -> None:
    """The error detail names the offending key: it must still encode (a 500 before)."""
    body = scim_error(send(scim, "POST", "/Users", {"userName": "k", LONE + "x": 1}), 400)
    assert "\\ud800" in body["detail"]
    r = send(scim, "POST", "/Users", {"userName": "k", "name": {"given" + LONE: "x"}})
    scim_error(r, 400, "invalidValue")
    # the connection survived: the next request on it works
    assert scim.get("/ServiceProviderConfig").status_code == 200


def test_raw_surrogate_bytes_nan_and_deep_nesting_are_400(scim: httpx.Client) -> None:
    scim_error(send(scim, "POST", "/Users", b'{"userName":"x\xed\xa0\x80"}'), 400, "invalidSyntax")
    scim_error(send(scim, "POST", "/Users", b'{"userName":"x","n":NaN}'), 400, "invalidSyntax")
    deep = b'{"userName":"d","x":' + b"[" * 200 + b"]" * 200 + b"}"
    scim_error(send(scim, "POST", "/Users", deep), 400, "invalidValue")
    scim_error(send(scim, "POST", "/Users", b"[" * 100_000), 400, "invalidSyntax")
    # a UTF-8 BOM before the JSON is tolerated, as before
    r = send(
        scim, "POST", "/Users", b"\xef\xbb\xbf" + json.dumps({"userName": f"bom-{tag()}"}).encode()
    )
    assert r.status_code == 201, r.text


def test_string_bounds_on_the_wire(scim: httpx.Client) -> None:
    ok = f"b{tag()}".ljust(256, "x")
    assert scim.post("/Users", json={"userName": ok}).status_code == 201
    scim_error(scim.post("/Users", json={"userName": ok + "x"}), 400, "invalidValue")
    scim_error(scim.post("/Groups", json={"displayName": "g" * 257}), 400, "invalidValue")


# --- .search and query parameters of the wrong type ----------------------------------------

WRONG = [[1], {}, 5, [["userName"]], True, [None], ["userName", 3]]


@pytest.mark.parametrize("path", ["/Users/.search", "/Groups/.search", "/.search"])
def test_search_parameters_are_type_checked(scim: httpx.Client, path: str) -> None:
    for value in WRONG:
        for name in ("attributes", "excludedAttributes", "sortBy", "sortOrder", "filter"):
            r = send(scim, "POST", path, {"schemas": [SEARCH], name: value})
            scim_error(r, 400, "invalidValue")
    for name, value in (("sortBy", ["userName"]), ("startIndex", "one"), ("count", [1]),
                        ("startIndex", {}), ("count", 1e400), ("count", True)):  # fmt: skip
        scim_error(send(scim, "POST", path, {"schemas": [SEARCH], name: value}), 400)
    # the legitimately valid forms still work
    for params in (
        {"attributes": ["userName"]},
        {"attributes": "userName,displayName"},
        {"excludedAttributes": ["members"]},
        {"sortBy": "meta.created", "sortOrder": "descending"},
        {"startIndex": 10**30, "count": -5},  # clamped, RFC 7644 §3.4.2.4
        {"count": 2.0},
    ):
        r = send(scim, "POST", path, {"schemas": [SEARCH], **params})
        assert r.status_code == 200, (params, r.text)


def test_query_parameters_are_checked(scim: httpx.Client) -> None:
    scim_error(scim.get("/Users", params={"filter": 'userName eq "a\x00"'}), 400, "invalidValue")
    scim_error(scim.get("/Users", params={"attributes": "userName\x00"}), 400, "invalidValue")
    scim_error(scim.get("/Users", params={"filter": "x" * 9000}), 400, "invalidValue")
    scim_error(scim.get("/Users", params={"startIndex": "1e999"}), 400, "invalidValue")
    scim_error(scim.get("/Users/%00"), 404)
    scim_error(scim.get("/Users/" + "a" * 5000), 404)
    assert scim.get("/Users", params={"count": "99999999999999999999999"}).status_code == 200


def test_bulk_operation_fields_are_type_checked(scim: httpx.Client) -> None:
    user = scim.post("/Users", json={"userName": f"v-{tag()}"}).json()
    r = send(scim, "POST", "/Bulk", {"schemas": [BULK], "Operations": [
        {"method": "DELETE", "path": f"/Users/{user['id']}", "version": 5},
        {"method": 7, "path": "/Users"},
        {"method": "POST", "path": "/Users", "bulkId": ["x"], "data": {"userName": "z"}},
        {"method": "POST", "path": ["/Users"], "bulkId": "y"},
    ]})  # fmt: skip
    assert r.status_code == 200, r.text
    ops = r.json()["Operations"]
    assert [op["status"] for op in ops] == ["400", "400", "400", "400"]
    assert all(op["response"]["schemas"] == [ERROR] for op in ops)
    assert scim.get(f"/Users/{user['id']}").status_code == 200  # not deleted


# --- headers and the audit trail ------------------------------------------------------------


def test_request_id_is_bounded_and_of_a_safe_charset(
    scim_server: ScimServer, scim: httpx.Client, store: sa.Engine
) -> None:
    kept = "okta-req.1:2_3-x"
    r = scim.post("/Users", json={"userName": f"rid-{tag()}"}, headers={"X-Request-ID": kept})
    assert r.status_code == 201 and r.headers["x-request-id"] == kept
    for hostile in ("x" * 65, "a b", "a;b", "é".encode("latin-1"), "x\tz", "../../etc"):
        r = scim.post(
            "/Users", json={"userName": f"rid-{tag()}"}, headers={"X-Request-ID": hostile}
        )
        assert r.status_code == 201
        generated = r.headers["x-request-id"]
        assert generated != hostile and len(generated) == 32 and generated.isalnum()
        with store.connect() as conn:
            stored = conn.execute(
                sa.select(tables.audit_events.c.request_id).where(
                    tables.audit_events.c.resource_id == r.json()["id"]
                )
            ).scalar_one()
        assert stored == generated
    with store.connect() as conn:
        assert verify(conn).ok


# --- an unexpected error inside one operation ------------------------------------------------


@pytest.fixture
def failing_insert(scim_server: ScimServer, store: sa.Engine) -> Iterator[str]:
    """A database trigger that makes inserting one userName fail: a real, unexpected
    database error (not a SCIM rule) in the middle of a request, on either backend."""
    doomed = f"boom-{tag()}"
    name = f"t_{tag()}"
    with store.begin() as conn:
        if store.dialect.name == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE INSERT ON scim_users "
                f"WHEN NEW.user_name = '{doomed}' BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.user_name = '{doomed}' THEN RAISE EXCEPTION 'boom'; END IF; "
                f"RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE INSERT ON scim_users "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
    try:
        yield doomed
    finally:
        with store.begin() as conn:
            if store.dialect.name == "sqlite":
                conn.exec_driver_sql(f"DROP TRIGGER {name}")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER {name} ON scim_users")
                conn.exec_driver_sql(f"DROP FUNCTION {name}()")


def test_bulk_unexpected_error_is_that_operation_s_500_and_stops_the_rest(
    scim: httpx.Client, store: sa.Engine, failing_insert: str
) -> None:
    first, last = f"first-{tag()}", f"last-{tag()}"
    before = snapshot(store)
    r = send(scim, "POST", "/Bulk", {"schemas": [BULK], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "a", "data": {"userName": first}},
        {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"userName": failing_insert}},
        {"method": "POST", "path": "/Users", "bulkId": "c", "data": {"userName": last}},
    ]})  # fmt: skip
    assert r.status_code == 200, r.text
    ops = r.json()["Operations"]
    assert [(op["bulkId"], op["status"]) for op in ops] == [("a", "201"), ("b", "500")]
    error = ops[1]["response"]
    assert error["schemas"] == [ERROR] and error["status"] == "500"
    assert "rolled back" in error["detail"] and "boom" not in r.text and "Traceback" not in r.text
    # operation a committed and audited; b rolled back; c never ran
    for name, present in ((first, 1), (failing_insert, 0), (last, 0)):
        found = scim.get("/Users", params={"filter": f'userName eq "{name}"'}).json()
        assert found["totalResults"] == present, name
    after = snapshot(store)
    assert after[0] == before[0] + 1 and after[3] == before[3] + 1
    with store.connect() as conn:
        assert verify(conn).ok


def test_single_request_unexpected_error_commits_nothing(
    scim: httpx.Client, store: sa.Engine, failing_insert: str
) -> None:
    before = snapshot(store)
    r = scim.post("/Users", json={"schemas": [USER], "userName": failing_insert})
    scim_error(r, 500)
    assert r.json()["detail"] == "internal error" and "boom" not in r.text
    assert snapshot(store) == before
