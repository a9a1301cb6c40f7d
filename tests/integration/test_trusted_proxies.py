"""`trusted_proxies` on a real `scimgate serve`: X-Forwarded-For / -Proto count only when the
TCP peer is a listed proxy, and then the client is the right-most untrusted hop."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from scimgate.audit.log import iter_events
from scimgate.config import default_sqlite_url
from scimgate.store.db import Database
from tests.fixtures.server import ScimServer, start_server
from tests.support.scim import USER_SCHEMA

PROXY = "127.0.0.2"  # the one trusted proxy; the tests' own 127.0.0.1 is not trusted


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScimServer]:
    directory = tmp_path_factory.mktemp("trusted")
    srv = start_server(
        directory, default_sqlite_url(directory), settings={"trusted_proxies": [f"{PROXY}/32"]}
    )
    try:
        yield srv
    finally:
        srv.stop()


def _create(server: ScimServer, source: str, headers: dict[str, str]) -> tuple[str, str | None]:
    """POST a user from ``source``; return its meta.location and the audited client."""
    rid = uuid.uuid4().hex
    transport = httpx.HTTPTransport(local_address=source)
    with server.client(transport=transport) as scim:
        r = scim.post(
            "/Users",
            json={"schemas": [USER_SCHEMA], "userName": f"{rid}@example.com"},
            headers={"X-Request-ID": rid, **headers},
        )
    assert r.status_code == 201, r.text
    db = Database(server.database_url)
    try:
        with db.read() as conn:
            clients = [e["client"] for e in iter_events(conn) if e["request_id"] == rid]
    finally:
        db.dispose()
    assert len(clients) == 1
    return str(r.json()["meta"]["location"]), clients[0]


FORWARDED = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7, 127.0.0.2", "X-Forwarded-Proto": "https"}


def test_a_trusted_proxy_forwards_client_and_scheme(server: ScimServer) -> None:
    location, client = _create(server, PROXY, FORWARDED)
    # right to left: 127.0.0.2 is a trusted proxy, 203.0.113.7 is not: the client;
    # 6.6.6.6 is whatever the client itself claimed
    assert client == "203.0.113.7"
    assert location.startswith("https://127.0.0.1:")


def test_anyone_else_forwards_nothing(server: ScimServer) -> None:
    location, client = _create(server, "127.0.0.1", FORWARDED)
    assert client == "127.0.0.1"
    assert location.startswith("http://127.0.0.1:")


def test_a_trusted_proxy_without_headers_is_the_client(server: ScimServer) -> None:
    location, client = _create(server, PROXY, {})
    assert client == PROXY
    assert location.startswith("http://")
