"""The SCIM endpoint behind HAProxy (`scim_front`) and the direct port, on a real `scimgate up`:
TLS with the generated CA, deadlines for slow senders on both ports, body limits, the
per-source rate limit and connection cap, the allow-list, and forwarded headers that only
HAProxy may set.

One instance for the module, its limits tuned down in scimgate.yaml so that each deadline
costs about a second. Loopback has a whole /8: tests that count per source (rate limit,
connection cap) or must be refused (allow-list) connect from their own 127.0.0.x address.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from scimgate.audit.log import iter_events
from scimgate.store.db import Database
from tests.support.scim import PATCH_SCHEMA, user_body
from tests.support.stack import write_config
from tests.support.up import UpStack, scimgate, start_up

pytestmark = pytest.mark.haproxy

HEADER_DEADLINE = 1.0  # both ports (client_header_timeout, scim_front.http_request_timeout)
BODY_DEADLINE = 2.0
MAX_BODY = 4096
BULK_MAX = 8192
RATE = 25  # requests per RATE_PERIOD from one address
RATE_PERIOD = 30
PER_SOURCE = 25  # open connections from one address, at HAProxy
DIRECT_MAX = 30  # open connections on the direct port
MARGIN = 2.0  # scheduling slack on a loaded 2-core machine

# 127.0.0.0/29 is allowed; each test that counts per source has its own address.
SRC_RATE, SRC_PEER, SRC_SLOW, SRC_CAP, SRC_REFUSED = (
    "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.9",
)  # fmt: skip


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    directory = tmp_path_factory.mktemp("front") / "inst"
    write_config(
        directory,
        client_header_timeout=HEADER_DEADLINE,
        client_body_timeout=BODY_DEADLINE,
        max_connections=DIRECT_MAX,
        max_body_bytes=MAX_BODY,
        bulk_max_payload_bytes=BULK_MAX,
        scim_front={
            "http_request_timeout": HEADER_DEADLINE,
            "client_timeout": 5.0,
            "max_connections_per_source": PER_SOURCE,
            "rate_limit": {"requests": RATE, "period": RATE_PERIOD},
            "allowed_sources": ["127.0.0.0/29"],
        },
    )
    stack = start_up(directory)
    try:
        yield stack
    finally:
        stack.stop()


def tls_context(up: UpStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=up.info["scim_ca_file"])


def public(up: UpStack, source: str = "127.0.0.1") -> httpx.Client:
    """An IdP on the public TLS endpoint, connecting from ``source``."""
    return httpx.Client(
        base_url=up.info["scim_public_url"],
        transport=httpx.HTTPTransport(verify=tls_context(up), local_address=source),
        headers={
            "Authorization": f"Bearer {up.info['token']}",
            "Content-Type": "application/scim+json",
        },
        timeout=15,
    )


def audit_client(up: UpStack, request_id: str) -> list[str | None]:
    """The audit `client` of every event the request with this X-Request-ID wrote."""
    db = Database(up.info["database_url"])
    try:
        with db.read() as conn:
            return [e["client"] for e in iter_events(conn) if e["request_id"] == request_id]
    finally:
        db.dispose()


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


# ---------------------------------------------------------------------------------------------


def test_stack_json_names_both_endpoints(up: UpStack) -> None:
    info = up.info
    assert info["scim_url"].startswith("http://127.0.0.1:")
    assert info["scim_public_url"].startswith("https://127.0.0.1:")
    assert info["scim_public_url"].endswith("/scim/v2")
    assert Path(info["scim_ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    sock = Path(info["scim_socket"])
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    key = Path(info["dir"]) / "tls" / "scim.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # the direct port listens on loopback only
    assert address_of(info["scim_url"])[0] == "127.0.0.1"


def test_tls_endpoint_needs_the_ca_and_serves_scim_with_public_locations(up: UpStack) -> None:
    base = up.info["scim_public_url"]
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(base + "/ServiceProviderConfig", timeout=5)  # the system store: unknown CA
    with public(up) as idp:
        r = idp.post("/Users", json=user_body("tls@example.com"))
        assert r.status_code == 201, r.text
        location = r.json()["meta"]["location"]
        assert location == f"{base}/Users/{r.json()['id']}"
        assert r.headers["location"] == location
        r = idp.patch(
            location,
            json={
                "schemas": [PATCH_SCHEMA],
                "Operations": [{"op": "replace", "path": "active", "value": False}],
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["active"] is False
        assert r.json()["meta"]["location"] == location
        assert idp.get(location).json()["active"] is False
        # only /scim/v2 is public: metrics and readiness stay on the direct port
        assert idp.get(base.rsplit("/scim", 1)[0] + "/metrics").status_code == 404


def test_spoofed_forwarded_headers_through_haproxy_are_replaced(up: UpStack) -> None:
    rid = uuid.uuid4().hex
    with public(up, SRC_PEER) as idp:
        r = idp.post(
            "/Users",
            json=user_body("spoof-front@example.com"),
            headers={
                "X-Request-ID": rid,
                "X-Forwarded-For": "203.0.113.9",
                "X-Real-IP": "203.0.113.10",
                "Forwarded": "for=203.0.113.11;proto=http",
                "X-Forwarded-Proto": "http",
            },
        )
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["location"].startswith(up.info["scim_public_url"])
    assert audit_client(up, rid) == [SRC_PEER]  # the real peer, not 127.0.0.1 (HAProxy) either


def test_spoofed_forwarded_headers_on_the_direct_port_are_ignored(up: UpStack) -> None:
    rid = uuid.uuid4().hex
    with up.scim() as scim:
        r = scim.post(
            "/Users",
            json=user_body("spoof-direct@example.com"),
            headers={
                "X-Request-ID": rid,
                "X-Forwarded-For": "203.0.113.9",
                "X-Forwarded-Proto": "https",
            },
        )
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["location"].startswith(up.info["scim_url"])  # still http
    assert audit_client(up, rid) == ["127.0.0.1"]


def test_body_over_the_limit_is_refused_by_haproxy(up: UpStack) -> None:
    log = Path(up.info["haproxy_log"])
    with public(up) as idp:
        small = idp.post("/Users", json=user_body("small@example.com", nickName="x" * 1000))
        assert small.status_code == 201 and "x-request-id" in small.headers  # reached scimgate
        big = idp.post("/Users", json=user_body("big@example.com", nickName="x" * MAX_BODY))
        assert big.status_code == 413, big.text
        assert big.json()["status"] == "413"
        assert "x-request-id" not in big.headers  # scimgate stamps every answer it gives
        # /Bulk has its own, larger limit (maxPayloadSize)
        bulk = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "Operations": [], "padding": "x" * (MAX_BODY + 1000)}  # fmt: skip
        r = idp.post("/Bulk", json=bulk)
        assert r.status_code != 413 and "x-request-id" in r.headers, r.text
        bulk["padding"] = "x" * BULK_MAX
        r = idp.post("/Bulk", json=bulk)
        assert r.status_code == 413 and "x-request-id" not in r.headers
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # HAProxy writes its log line after the response
        refused = [ln for ln in log.read_text().splitlines() if "/<NOSRV> " in ln and " 413 " in ln]
        if len(refused) >= 2:
            break
        time.sleep(0.1)
    assert len(refused) == 2, refused


def test_rate_limit_answers_429_with_retry_after(up: UpStack) -> None:
    statuses = []
    with public(up, SRC_RATE) as idp:
        for _ in range(RATE):
            statuses.append(idp.get("/ServiceProviderConfig").status_code)
        limited = idp.get("/ServiceProviderConfig")
    assert statuses == [200] * RATE
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == str(RATE_PERIOD)
    assert limited.json()["status"] == "429"
    with public(up) as idp:  # another address is not affected
        assert idp.get("/ServiceProviderConfig").status_code == 200


def test_source_outside_the_allow_list_gets_403(up: UpStack) -> None:
    with public(up, SRC_REFUSED) as idp:
        r = idp.get("/ServiceProviderConfig")
    assert r.status_code == 403
    assert r.json()["detail"] == "source address not allowed"


def test_connections_per_source_are_capped(up: UpStack) -> None:
    host, port = address_of(up.info["scim_public_url"])
    ctx = tls_context(up)
    opened: list[ssl.SSLSocket] = []
    refused = 0
    try:
        for _ in range(PER_SOURCE + 5):
            try:  # HAProxy closes a refused connection at once (a reset, or EOF in the handshake)
                raw = socket.create_connection((host, port), timeout=5, source_address=(SRC_CAP, 0))
            except ConnectionResetError:
                refused += 1
                continue
            try:
                opened.append(ctx.wrap_socket(raw, server_hostname=host))
            except (ssl.SSLError, OSError):
                raw.close()
                refused += 1
    finally:
        for s in opened:
            s.close()
    assert len(opened) == PER_SOURCE and refused == 5


def _slow_senders(
    open_one: Any, count: int, normal_request: Any
) -> tuple[list[float], list[bytes], int]:
    """Open ``count`` connections that send a request line and then one header line every
    0.25 s; return how long each lived, what each received, and the status of a normal
    request made while they were all open."""
    senders = []
    for _ in range(count):
        sock = open_one()
        sock.sendall(b"GET /scim/v2/ServiceProviderConfig HTTP/1.1\r\nHost: scim\r\n")
        sock.setblocking(False)
        senders.append((sock, time.monotonic()))
    status = normal_request()
    lived: dict[int, float] = {}
    received: dict[int, bytes] = {}
    stop = time.monotonic() + HEADER_DEADLINE + 3 * MARGIN
    while len(lived) < count and time.monotonic() < stop:
        for i, (sock, opened) in enumerate(senders):
            if i in lived:
                continue
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                data = sock.recv(4096)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except OSError:
                data = b""
            lived[i], received[i] = time.monotonic() - opened, data
        time.sleep(0.25)
    for sock, _ in senders:
        sock.close()
    return list(lived.values()), list(received.values()), status


def test_slow_headers_are_cut_by_haproxy(up: UpStack) -> None:
    host, port = address_of(up.info["scim_public_url"])
    ctx = tls_context(up)

    def open_one() -> ssl.SSLSocket:
        raw = socket.create_connection((host, port), timeout=5, source_address=(SRC_SLOW, 0))
        return ctx.wrap_socket(raw, server_hostname=host)

    def normal() -> int:
        with public(up) as idp:
            return idp.get("/ServiceProviderConfig").status_code

    lived, received, status = _slow_senders(open_one, 20, normal)
    assert status == 200
    assert len(lived) == 20, "some slow connections were still open"
    assert all(HEADER_DEADLINE - 0.2 <= t <= HEADER_DEADLINE + MARGIN for t in lived), lived
    assert all(r.startswith(b"HTTP/1.1 408") for r in received), received[:3]


def test_slow_headers_are_cut_on_the_direct_port(up: UpStack) -> None:
    host, port = address_of(up.info["scim_url"])

    def normal() -> int:
        with up.scim() as scim:
            return scim.get("/ServiceProviderConfig").status_code

    lived, received, status = _slow_senders(
        lambda: socket.create_connection((host, port), timeout=5), 20, normal
    )
    assert status == 200
    assert len(lived) == 20, "some slow connections were still open"
    assert all(HEADER_DEADLINE - 0.2 <= t <= HEADER_DEADLINE + MARGIN for t in lived), lived
    assert all(r.startswith(b"HTTP/1.1 408") for r in received), received[:3]


def test_direct_port_bounds_open_connections_but_not_haproxys_socket(up: UpStack) -> None:
    host, port = address_of(up.info["scim_url"])
    idle = [socket.create_connection((host, port), timeout=5) for _ in range(DIRECT_MAX + 5)]
    try:
        answers = []
        for sock in idle[DIRECT_MAX:]:
            sock.settimeout(2)
            answers.append(sock.recv(4096))
        assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers
        # HAProxy comes in on the unix socket: not counted against the direct port
        with public(up) as idp:
            assert idp.get("/ServiceProviderConfig").status_code == 200
        # connections that never send a byte are closed at the header deadline too
        started = time.monotonic()
        idle[0].settimeout(HEADER_DEADLINE + MARGIN)
        assert idle[0].recv(4096) == b""
        assert time.monotonic() - started <= HEADER_DEADLINE + MARGIN
    finally:
        for sock in idle:
            sock.close()


def test_slow_body_is_cut_on_the_direct_port(up: UpStack) -> None:
    host, port = address_of(up.info["scim_url"])
    rid = uuid.uuid4().hex
    with contextlib.closing(socket.create_connection((host, port), timeout=5)) as sock:
        sock.sendall(
            b"POST /scim/v2/Users HTTP/1.1\r\nHost: scim\r\nContent-Type: application/scim+json\r\n"
            + f"Authorization: Bearer {up.info['token']}\r\nX-Request-ID: {rid}\r\n".encode()
            + b'Content-Length: 100\r\n\r\n{"userName":'
        )
        started = time.monotonic()
        sock.settimeout(BODY_DEADLINE + 2 * MARGIN)
        answer = sock.recv(4096)
        took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert BODY_DEADLINE - 0.2 <= took <= BODY_DEADLINE + MARGIN
    assert audit_client(up, rid) == []  # nothing was written
    time.sleep(0.2)
    assert "internal error" not in up.log


def test_haproxy_render_includes_the_scim_frontend(up: UpStack, tmp_path: Path) -> None:
    """A production user gets the same frontend from `haproxy render` as `up` runs (the TLS
    port aside: `up --scim-tls-port` overrides it for one run)."""

    def scim_section(config: str) -> list[str]:
        lines = config[config.index("frontend fe_scimgate_scim") :].splitlines()
        return [re.sub(r"^(    bind [0-9.]+:)[0-9]+", r"\1PORT", line) for line in lines]

    # issue 15: a full config (it holds the secret) is written only to -o FILE
    rendered = tmp_path / "full.cfg"
    full = scimgate("haproxy", "render", "--dir", up.info["dir"], "-o", str(rendered))
    assert full.returncode == 0, full.stderr
    assert "haproxy -c: configuration is valid" in full.stderr
    running = Path(up.info["haproxy_config"]).read_text()
    assert scim_section(rendered.read_text()) == scim_section(running)
    scim_only = scimgate("haproxy", "render", "--dir", up.info["dir"], "--mode", "scim")
    assert scim_only.returncode == 0, scim_only.stderr
    assert scim_section(scim_only.stdout) == scim_section(running)
    assert "frontend fe_scimgate\n" not in scim_only.stdout
    assert f"timeout http-request {int(HEADER_DEADLINE)}s" in scim_only.stdout
