"""Failed authentication against a real `scimgate serve` (issue 8): counted, logged, audited
in bounded form (one event per source and window, written by a flush, never by the request),
slowed down per source with 429 + Retry-After, and flushed on shutdown.

Distinct sources are real loopback addresses (127.0.0.x): the server sees each as its own
client address, as it would see IdPs and attackers.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from scimgate.api.auth_guard import MAX_AUDITED_SOURCES, MAX_SAMPLE_CHARS
from scimgate.audit.log import verify
from scimgate.config import default_sqlite_url
from scimgate.store import tables
from tests.fixtures.server import ScimServer, start_server
from tests.support.scim import ERROR_SCHEMA as ERROR

E = tables.audit_events
# docs/operations.md "Failed authentication": at most MAX_AUDITED_SOURCES + 2 events per
# window, each at most 1,536 bytes of row data and about 2 KiB on disk with its indexes.
EVENTS_PER_WINDOW = MAX_AUDITED_SOURCES + 2
DISK_BYTES_PER_EVENT = 2048
BIG = 60 * 1024


def client_from(server: ScimServer, address: str, **kw: Any) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.base_url, transport=transport, timeout=30, **kw)


def events(url: str, *kinds: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(E).where(E.c.kind.in_(kinds)).order_by(E.c.seq))
            return [dict(r) for r in rows.mappings()]
    finally:
        engine.dispose()


def audit_head(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert verify(conn).ok
            return int(conn.execute(sa.select(tables.audit_head.c.seq)).scalar_one())
    finally:
        engine.dispose()


def metric(server: ScimServer, name: str, **labels: str) -> float:
    text = httpx.get(server.base_url.removesuffix("/scim/v2") + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def assert_scim_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status)


def db_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("scimgate.db*"))


@pytest.fixture
def server_dir(tmp_path: Path) -> Path:
    return tmp_path / f"auth-{uuid.uuid4().hex[:6]}"


def test_unauthenticated_flood_writes_nothing_until_a_bounded_flush(
    backend: str, request: pytest.FixtureRequest, server_dir: Path
) -> None:
    """Issue 8's probe: 50 unauthenticated requests with 60 KB paths and X-Request-IDs. No
    request writes (the audit head does not move while they are served); the metric counts
    all 50; the shutdown flush writes ONE aggregate event with every field bounded; on
    SQLite the database grows by at most one window's documented bound."""
    url = (
        default_sqlite_url(server_dir)
        if backend == "sqlite"
        else request.getfixturevalue("pg_server").create_database()
    )
    # One window for the whole flood: on a loaded machine 50 requests of 60 KB can straddle
    # the default 60 s window, and a closed window is flushed as its own event (by design).
    server = start_server(server_dir, url, extra_yaml="auth_failure_window_seconds: 3600\n")
    try:
        head = audit_head(url)
        before = db_bytes(server_dir)
        with httpx.Client(base_url=server.base_url, timeout=30) as anon:
            for i in range(50):
                headers = {"X-Request-ID": "r" * BIG, "User-Agent": "u" * BIG}
                if i % 2:
                    headers["Authorization"] = f"Bearer sgt_{'g' * 40}{i}"
                r = anon.get("/Users/" + "p" * BIG, headers=headers)
                assert_scim_error(r, 401)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert len(r.headers["x-request-id"]) == 32  # ours, not the client's
        assert audit_head(url) == head  # no synchronous write, none queued either
        assert metric(server, "scimgate_auth_failures_total", reason="missing") == 25
        assert metric(server, "scimgate_auth_failures_total", reason="unknown") == 25
        log = (server_dir / "server.log").read_text()
        assert log.count('"status": 401') == 50 and "p" * 300 not in log  # logged, bounded
    finally:
        server.stop()  # SIGTERM: the pending window is flushed on the way out
    (event,) = events(url, "auth.failed")
    assert event["seq"] == head + 1 and audit_head(url) == head + 1
    assert event["client"] == "127.0.0.1" and event["actor"] is None
    assert event["user_agent"] == "u" * MAX_SAMPLE_CHARS
    assert len(event["request_id"]) == 32
    detail = event["detail"]
    assert detail["count"] == 50 and detail["reasons"] == {"missing": 25, "unknown": 25}
    assert detail["path"].startswith("/scim/v2/Users/ppp") and len(detail["path"]) == 128
    assert len(json.dumps(detail)) < 600
    if backend == "sqlite":
        growth = db_bytes(server_dir) - before
        assert growth <= EVENTS_PER_WINDOW * DISK_BYTES_PER_EVENT, growth


def test_a_source_over_the_limit_gets_429_but_a_valid_token_does_not(tmp_path: Path) -> None:
    """Over the limit, a repeated bad token (or none) is answered 429 + Retry-After at once;
    a new guess is checked and answered 429 too; a valid token from the same address, even
    one this process has never seen, still works: others' failures never lock an IdP out."""
    from click.testing import CliRunner

    from scimgate.cli import main as cli_main

    directory = tmp_path / "throttle"
    server = start_server(
        directory, default_sqlite_url(directory), extra_yaml="auth_failure_limit: 5\n"
    )
    try:
        head = audit_head(server.database_url)
        with client_from(server, "127.0.0.1", headers={"Authorization": "Bearer nope"}) as bad:
            for _ in range(4):
                assert_scim_error(bad.get("/Users"), 401)
            assert_scim_error(bad.get("/Users"), 429)  # the 5th failure reaches the limit
            started = time.monotonic()
            for _ in range(20):
                r = bad.post("/Users", json={"userName": "x"})
                assert_scim_error(r, 429)
                assert 1 <= int(r.headers["retry-after"]) <= 60
            assert_scim_error(bad.get("/Users", headers={"Authorization": ""}), 429)
            assert time.monotonic() - started < 10  # answered at once, not held
            assert_scim_error(bad.get("/Users", headers={"Authorization": "Bearer new"}), 429)
        # a token created now (never seen by the server) from the same address
        made = CliRunner().invoke(cli_main, ["token", "create", "idp", "--dir", str(directory)])
        assert made.exit_code == 0
        idp = {"Authorization": f"Bearer {made.stdout.strip()}"}
        with client_from(server, "127.0.0.1", headers=idp) as scim:
            assert scim.get("/Users", params={"count": 0}).status_code == 200
            r = scim.post("/Users", json={"userName": f"t-{uuid.uuid4().hex[:6]}"})
            assert r.status_code == 201
        # another address is not slowed down
        with client_from(server, "127.0.0.2", headers={"Authorization": "Bearer nope"}) as other:
            assert_scim_error(other.get("/Users"), 401)
        assert metric(server, "scimgate_auth_throttled_total") == 21
        assert metric(server, "scimgate_auth_failures_total", reason="unknown") == 7
        assert audit_head(server.database_url) == head + 2  # the token and the create
    finally:
        server.stop()
    by_client = {e["client"]: e["detail"] for e in events(server.database_url, "auth.failed")}
    assert by_client["127.0.0.1"]["count"] == 6 and by_client["127.0.0.1"]["throttled"] == 21
    assert by_client["127.0.0.2"]["count"] == 1 and "throttled" not in by_client["127.0.0.2"]


WINDOW = 3  # seconds: short, so these tests see the flush that closes a window


@pytest.fixture(scope="module")
def windowed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScimServer]:
    directory = tmp_path_factory.mktemp("auth-window")
    server = start_server(
        directory,
        default_sqlite_url(directory),
        extra_yaml=f"auth_failure_window_seconds: {WINDOW}\n",
    )
    try:
        yield server
    finally:
        server.stop()


def wait_for_events(url: str, kinds: tuple[str, ...], done: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 3 * WINDOW + 5
    while time.monotonic() < deadline:
        found = events(url, *kinds)
        if done(found):
            return found
        time.sleep(0.2)
    raise AssertionError(f"the flush did not write the expected events: {found}")


def test_one_event_per_source_and_window_with_an_overflow_bucket(windowed: ScimServer) -> None:
    """More sources than MAX_AUDITED_SOURCES fail in one window: an event of its own for
    each of the first ones, the rest in one overflow event; the flush runs when the window
    closes (no shutdown needed); the chain verifies."""
    url = windowed.database_url
    head, before = audit_head(url), len(events(url, "auth.failed"))
    n = MAX_AUDITED_SOURCES + 4
    for attempt in range(1, 4):  # until all requests land in one window (a loaded machine)
        clients = [client_from(windowed, f"127.0.{attempt}.{10 + i}") for i in range(n)]
        try:
            while time.time() % WINDOW > 0.3:  # start early in a window
                time.sleep(0.02)
            started = time.time()
            for anon in clients:
                assert_scim_error(anon.get("/Groups"), 401)
            if started // WINDOW == time.time() // WINDOW:
                break
        finally:
            for anon in clients:
                anon.close()
    window_start = datetime.fromtimestamp(started // WINDOW * WINDOW, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )

    def in_window(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in found if e["detail"]["window_start"] == window_start]

    found = in_window(wait_for_events(
        url, ("auth.failed",), lambda f: sum(e["detail"]["count"] for e in in_window(f)) == n
    ))  # fmt: skip
    own = [e for e in found if not e["detail"].get("overflow")]
    (overflow,) = [e for e in found if e["detail"].get("overflow")]
    assert len(own) == MAX_AUDITED_SOURCES and len(found) <= EVENTS_PER_WINDOW
    assert len({e["client"] for e in own}) == len(own)  # one event per source
    assert all(e["client"].startswith(f"127.0.{attempt}.") for e in own)
    assert all(e["detail"]["count"] == 1 for e in own)
    assert overflow["client"] is None and overflow["detail"]["sources"] == 4
    assert overflow["detail"]["count"] == 4
    # nothing but these aggregates was written, each as one chained event
    assert audit_head(url) - head == len(events(url, "auth.failed")) - before


def test_revoked_and_expired_tokens_are_named_in_their_aggregates(windowed: ScimServer) -> None:
    from click.testing import CliRunner

    from scimgate.cli import main as cli_main

    directory, url = str(windowed.directory), windowed.database_url
    before = len(events(url, "auth.failed", "token.expired_use"))
    runner = CliRunner()
    made = runner.invoke(cli_main, ["token", "create", "okta", "--dir", directory])
    short = runner.invoke(
        cli_main, ["token", "create", "short", "--expires-in", "1s", "--dir", directory]
    )
    assert made.exit_code == 0 and short.exit_code == 0
    assert runner.invoke(cli_main, ["token", "revoke", "okta", "--dir", directory]).exit_code == 0
    time.sleep(1.1)
    with client_from(windowed, "127.0.0.3") as anon:
        for secret in (made.stdout.strip(), short.stdout.strip()):
            assert_scim_error(
                anon.get("/Users", headers={"Authorization": f"Bearer {secret}"}), 401
            )
    found = wait_for_events(
        url, ("auth.failed", "token.expired_use"), lambda f: len(f) == before + 2
    )
    kinds = {e["kind"]: e for e in found[before:]}
    assert kinds["auth.failed"]["actor"] == "okta"
    assert kinds["auth.failed"]["detail"]["reasons"] == {"revoked": 1}
    assert kinds["auth.failed"]["detail"]["tokens"] == ["okta"]
    assert kinds["token.expired_use"]["actor"] == "short"
    assert kinds["token.expired_use"]["detail"]["reasons"] == {"expired": 1}
