"""Property: whatever a client sends to any SCIM endpoint, with any method, body and query
parameters, a real `scimgate serve` (SQLite and PostgreSQL) never answers 500; every error
is a well-formed RFC 7644 §3.12 body; a refused request changes nothing; a successful write
adds exactly its audit events; and at the end the audit chain verifies and replays to the
directory the store holds.

Bodies are arbitrary JSON (keys and strings from SCIM's vocabulary, lone surrogates, NUL,
long strings), SCIM-shaped templates with arbitrary leaves, and raw bytes; they are sent as
``\\uXXXX`` escapes or as raw (surrogate) bytes. Bounded: 150 examples per backend.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings, strategies as hs

from scimgate.audit.log import current_state, iter_events, verify
from scimgate.audit.replay import replay
from scimgate.config import default_sqlite_url
from scimgate.store import tables
from tests.fixtures.server import ScimServer, start_server
from tests.support.scim import (
    BULK_REQUEST_SCHEMA as BULK,
    ENTERPRISE_SCHEMA as ENTERPRISE,
    ERROR_SCHEMA as ERROR,
    PATCH_SCHEMA as PATCH,
    SEARCH_SCHEMA as SEARCH,
    USER_SCHEMA as USER,
)

SCIM_TYPES = {
    "invalidFilter", "tooMany", "uniqueness", "mutability", "invalidSyntax", "invalidPath",
    "noTarget", "invalidValue", "invalidVers", "sensitive",
}  # fmt: skip
EXAMPLES = 150

# --- strategies -----------------------------------------------------------------------------

TEXT = hs.one_of(
    hs.sampled_from([
        "alice@example.com", "Engineering", "work", "true", "False", "", " ", "bulkId:a",
        "\ud800", "a\udfffb", "\x00", "é", "😀", "x" * 300, "@user", "@group",
        'userName eq "alice@example.com"', "userName sw \"a", "members[value eq \"@user\"]",
        "emails[type eq \"work\"].value", "name.givenName", "meta.created", "descending",
    ]),
    hs.text(alphabet=hs.characters(exclude_categories=()), max_size=10),
)  # fmt: skip
KEYS = hs.one_of(
    hs.sampled_from([
        "schemas", "id", "externalId", "userName", "displayName", "name", "givenName",
        "emails", "value", "type", "primary", "active", "members", "groups", "meta", "title",
        "password", ENTERPRISE, "manager", "Operations", "op", "path", "method", "bulkId",
        "data", "version", "attributes", "excludedAttributes", "filter", "sortBy",
        "sortOrder", "startIndex", "count", "failOnErrors",
    ]),
    TEXT,
)  # fmt: skip
LEAF = hs.one_of(
    hs.none(), hs.booleans(), hs.integers(-(2**70), 2**70),
    hs.floats(allow_nan=False, allow_infinity=False), TEXT,
)  # fmt: skip
ANY_JSON = hs.recursive(
    LEAF,
    lambda kids: hs.lists(kids, max_size=4) | hs.dictionaries(KEYS, kids, max_size=5),
    max_leaves=15,
)
ID = hs.sampled_from(["@user", "@group"]) | TEXT

USER_BODY = hs.fixed_dictionaries(
    {"schemas": hs.just([USER]), "userName": TEXT},
    optional={
        "displayName": TEXT | ANY_JSON,
        "active": hs.booleans() | ANY_JSON,
        "externalId": TEXT,
        "emails": hs.lists(
            hs.fixed_dictionaries({"value": TEXT}, optional={"type": TEXT}), max_size=2
        ),
        "name": hs.dictionaries(hs.sampled_from(["givenName", "familyName", "formatted"]), TEXT),
        ENTERPRISE: hs.dictionaries(hs.sampled_from(["department", "manager"]), TEXT),
        "extra": ANY_JSON,
    },
)
GROUP_BODY = hs.fixed_dictionaries(
    {"displayName": TEXT},
    optional={"members": hs.lists(hs.fixed_dictionaries({"value": ID}), max_size=2)},
)
PATCH_OP = hs.fixed_dictionaries(
    {"op": hs.sampled_from(["add", "replace", "remove", "Replace"]) | ANY_JSON},
    optional={
        "path": hs.sampled_from(["displayName", "active", "members", "emails", "name.givenName",
                                 'members[value eq "@user"]', f"{ENTERPRISE}:manager"]) | TEXT,
        "value": ANY_JSON | USER_BODY | hs.lists(hs.fixed_dictionaries({"value": ID}), max_size=2),
    },
)  # fmt: skip
PATCH_BODY = hs.fixed_dictionaries(
    {"schemas": hs.just([PATCH]), "Operations": hs.lists(PATCH_OP, max_size=3)}
)
SEARCH_BODY = hs.fixed_dictionaries(
    {"schemas": hs.just([SEARCH])},
    optional={
        name: ANY_JSON | TEXT | hs.lists(TEXT, max_size=2)
        for name in ("attributes", "excludedAttributes", "filter", "sortBy", "sortOrder",
                     "startIndex", "count")
    },
)  # fmt: skip
BULK_OP = hs.fixed_dictionaries(
    {
        "method": hs.sampled_from(["POST", "PUT", "PATCH", "DELETE"]) | ANY_JSON,
        "path": hs.sampled_from(["/Users", "/Groups", "/Users/@user", "/Groups/@group",
                                 "/Users/bulkId:a", "/Groups/bulkId:b"]) | TEXT,
    },
    optional={
        "bulkId": hs.sampled_from(["a", "b"]) | ANY_JSON,
        "data": USER_BODY | GROUP_BODY | PATCH_BODY | ANY_JSON,
        "version": ANY_JSON,
    },
)  # fmt: skip
BULK_BODY = hs.fixed_dictionaries(
    {"schemas": hs.just([BULK]), "Operations": hs.lists(BULK_OP, min_size=1, max_size=4)},
    optional={"failOnErrors": hs.integers(1, 3) | ANY_JSON},
)
QUERY = hs.dictionaries(
    hs.sampled_from(["filter", "attributes", "excludedAttributes", "sortBy", "sortOrder",
                     "startIndex", "count"]) | TEXT,
    TEXT | hs.integers(-(2**70), 2**70).map(str),
    max_size=3,
)  # fmt: skip
ENDPOINTS: list[tuple[str, str, Any]] = [
    ("GET", "/Users", None), ("POST", "/Users", USER_BODY), ("GET", "/Groups", None),
    ("POST", "/Groups", GROUP_BODY), ("POST", "/Users/.search", SEARCH_BODY),
    ("POST", "/Groups/.search", SEARCH_BODY), ("POST", "/.search", SEARCH_BODY),
    ("GET", "/Users/{user}", None), ("PUT", "/Users/{user}", USER_BODY),
    ("PATCH", "/Users/{user}", PATCH_BODY), ("DELETE", "/Users/{user}", None),
    ("GET", "/Groups/{group}", None), ("PUT", "/Groups/{group}", GROUP_BODY),
    ("PATCH", "/Groups/{group}", PATCH_BODY), ("DELETE", "/Groups/{group}", None),
    ("POST", "/Bulk", BULK_BODY), ("GET", "/ServiceProviderConfig", None),
    ("GET", "/ResourceTypes/{any}", None), ("GET", "/Schemas/{any}", None),
    ("GET", "/Me", None), ("PUT", "/Users", USER_BODY), ("POST", "/Users/{user}", USER_BODY),
]  # fmt: skip
WRITES = ("POST", "PUT", "PATCH", "DELETE")


# --- the server and what the store holds ------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScimServer]:
    """A server of our own: no other test's requests (or their audit flushes) in its chain."""
    directory = tmp_path_factory.mktemp(f"fuzz-{backend}")
    url = (
        default_sqlite_url(directory)
        if backend == "sqlite"
        else request.getfixturevalue("pg_server").create_database()
    )
    server = start_server(directory, url)
    try:
        yield server
    finally:
        server.stop()


def counts(engine: sa.Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(tables.users)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(tables.groups)).scalar_one(),
            conn.execute(sa.select(tables.audit_head.c.seq)).scalar_one(),
        )


def substitute(value: Any, ids: dict[str, str]) -> Any:
    """Put live ids where the strategies wrote @user / @group."""
    if isinstance(value, str):
        for marker, rid in ids.items():
            value = value.replace(marker, rid)
        return value
    if isinstance(value, list):
        return [substitute(v, ids) for v in value]
    if isinstance(value, dict):
        return {substitute(k, ids): substitute(v, ids) for k, v in value.items()}
    return value


def encode(body: Any, how: str) -> bytes:
    if how == "escaped":
        return json.dumps(body).encode()
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")


def url_part(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def check_response(r: httpx.Response) -> None:
    me = r.request.url.path.endswith("/Me")  # 501 by design: SCIM clients here are IdPs
    assert r.status_code < 500 or (me and r.status_code == 501), (
        f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    )
    if r.status_code >= 400:
        body = r.json()
        assert body["schemas"] == [ERROR], body
        assert body["status"] == str(r.status_code), body
        assert isinstance(body["detail"], str) and "Traceback" not in body["detail"]
        assert body.get("scimType", "invalidValue") in SCIM_TYPES, body
    elif r.content:
        json.loads(r.content.decode("utf-8"))  # strict UTF-8 JSON


def expected_effect(method: str, path: str, r: httpx.Response) -> tuple[int, int, int] | None:
    """(users, groups, audit events) the response says were added; None: cannot tell."""
    if r.status_code >= 300 or method not in WRITES or path.endswith("/.search"):
        return (0, 0, 0)
    if path == "/Bulk":
        users = groups = events = 0
        for op in r.json()["Operations"]:
            if int(op["status"]) >= 400:
                continue
            events += 1
            step = {"201": 1, "204": -1}.get(op["status"], 0)
            users += step if "/Users" in op["location"] else 0
            groups += step if "/Groups" in op["location"] else 0
        return users, groups, events
    step = {"POST": 1, "DELETE": -1}.get(method, 0)
    return (step if "/Users" in path else 0, step if "/Groups" in path else 0, 1)


def test_any_request_to_any_endpoint_is_never_a_500_nor_a_partial_commit(
    fuzz_server: ScimServer,
) -> None:
    engine = sa.create_engine(fuzz_server.database_url)
    client = fuzz_server.client()
    ids: dict[str, str] = {}

    def live_ids() -> dict[str, str]:
        """An existing user and group (made again when a DELETE removed them)."""
        for marker, path, body in (
            ("@user", "/Users", {"userName": f"fz-{uuid.uuid4().hex[:8]}"}),
            ("@group", "/Groups", {"displayName": f"fz-{uuid.uuid4().hex[:8]}"}),
        ):
            if marker not in ids or client.get(f"{path}/{ids[marker]}").status_code == 404:
                ids[marker] = client.post(path, json=body).json()["id"]
        return ids

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(data=hs.data())
    def one_request(data: hs.DataObject) -> None:
        method, template, body_strategy = data.draw(hs.sampled_from(ENDPOINTS))
        marks = live_ids()
        target = data.draw(hs.sampled_from(["live", "live", "random", "hostile"]))
        rid = {"live": None, "random": str(uuid.uuid4()), "hostile": data.draw(TEXT)}[target]
        path = template.format(
            user=url_part(rid) if rid is not None else marks["@user"],
            group=url_part(rid) if rid is not None else marks["@group"],
            any=url_part(data.draw(TEXT)),
        )
        query = data.draw(QUERY)
        if query:
            path += "?" + "&".join(f"{url_part(k)}={url_part(v)}" for k, v in query.items())
        headers = {"Content-Type": data.draw(hs.sampled_from(
            ["application/scim+json", "application/json", "application/scim+json; charset=utf-8"]
        ))}  # fmt: skip
        etag = data.draw(hs.sampled_from([None, "*", 'W/"1"', 'W/"2"', "garbage"]))
        if etag is not None:
            headers["If-Match" if method != "GET" else "If-None-Match"] = etag
        content = None
        if body_strategy is not None or method in ("POST", "PUT", "PATCH"):
            kind = data.draw(hs.sampled_from(["template", "template", "any", "bytes"]))
            if kind == "bytes":
                content = data.draw(hs.binary(max_size=64))
            else:
                body = data.draw(
                    body_strategy if kind == "template" and body_strategy is not None else ANY_JSON
                )
                how = data.draw(hs.sampled_from(["escaped", "raw"]))
                content = encode(substitute(body, marks), how)
        before = counts(engine)
        r = client.request(method, path, content=content, headers=headers)
        check_response(r)
        after = counts(engine)
        effect = expected_effect(method, path.split("?")[0], r)
        assert effect is not None
        assert tuple(a - b for a, b in zip(after, before, strict=True)) == effect, (
            method, path, r.status_code, r.text[:500],
        )  # fmt: skip

    try:
        one_request()
        # Nothing was committed without its audit event, nor audited without its commit.
        with engine.connect() as conn:
            result = verify(conn)
            assert result.ok, result
            told = replay(iter_events(conn))
            held = current_state(conn)
        assert {k: (u.user_name, u.active) for k, u in told.users.items()} == {
            k: (u.user_name, u.active) for k, u in held.users.items()
        }
        assert {k: (g.display_name, g.members) for k, g in told.groups.items()} == {
            k: (g.display_name, g.members) for k, g in held.groups.items()
        }
    finally:
        client.close()
        engine.dispose()
