"""Strict mode with real processes (docs/fleet.md): one HAProxy node rendered in strict mode
(threshold 3 s) with its agent, one API replica, one PostgreSQL.

HAProxy fails closed by itself: a killed agent stops refreshing the heartbeat entry and
identity-gated routes are denied once it expires (open routes still answer); a new agent
opens them again. An agent cut off from the database stops vouching too, and records both
transitions once it can."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from scimgate.app import tokens
from scimgate.haproxy.process import HAProxyProcess
from scimgate.instance.fleet import prepare_api_dir, prepare_node
from scimgate.policy.jwtmint import mint_jwt
from scimgate.policy.model import load_policy
from scimgate.store import nodes, tables
from scimgate.store.db import Database
from tests.fixtures.pg import PostgresServer
from tests.support.fleet import Proc, Replica, start_agent, start_replica
from tests.support.net import free_port
from tests.support.scim import tag, user_body
from tests.support.stack import write_config

pytestmark = [pytest.mark.postgres, pytest.mark.haproxy]

THRESHOLD = 3.0


@dataclass
class StrictNode:
    api_dir: Path
    node_dir: Path
    url: str
    database_url: str
    token: str
    replica: Replica
    agent: Proc
    haproxy_url: str

    def jwt(self, email: str) -> str:
        jwt = load_policy(self.api_dir / "policy.yaml").identity.jwt
        assert jwt is not None
        return mint_jwt(
            (self.api_dir / "keys" / "jwt.key.pem").read_text(), subject_claim=jwt.claim,
            identity=email, algorithm=jwt.algorithm, issuer=jwt.issuer, audience=jwt.audience,
        )  # fmt: skip

    def get(self, path: str, jwt: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {jwt}"} if jwt else {}
        return httpx.get(self.haproxy_url + path, headers=headers, timeout=5).status_code


def _wait_status(node: StrictNode, jwt: str, want: int, timeout: float) -> float:
    """Seconds until GET / answers ``want`` (AssertionError after ``timeout``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if node.get("/", jwt) == want:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"GET / never answered {want} within {timeout}s")


@pytest.fixture(scope="module")
def strict_node(
    pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StrictNode]:
    url = pg_server.create_database()
    root = tmp_path_factory.mktemp("st")
    settings = prepare_api_dir(root / "api", url)
    db = Database(url)
    try:
        token = tokens.create(db, "strict")
    finally:
        db.dispose()
    write_config(root / "node1", strict_mode_seconds=THRESHOLD)
    _s, layout, info = prepare_node(settings, root / "node1", haproxy_port=free_port())
    haproxy = HAProxyProcess(layout.config, layout.master_socket, pid_file=layout.pid_file,
                             log_path=layout.log, stats_socket=info["runtime_api"])  # fmt: skip
    haproxy.start()
    agent = start_agent(root / "node1", "node1", url)
    replica: Replica | None = None
    node: StrictNode | None = None
    try:
        replica = start_replica(root / "api", "replica1", url)
        node = StrictNode(root / "api", root / "node1", url, url, token, replica, agent,
                          info["haproxy_url"])  # fmt: skip
        yield node
    finally:
        if replica is not None:
            replica.proc.stop()
        (node.agent if node is not None else agent).stop()  # the test may have replaced it
        haproxy.stop()


def _user(node: StrictNode) -> tuple[str, str]:
    email = f"sam-{tag()}@example.com"
    with node.replica.client(node.token) as scim:
        r = scim.post("/Users", json=user_body(email, email=email))
        assert r.status_code == 201, r.text
    return email, node.jwt(email)


def test_rendered_config_denies_identity_routes_without_the_heartbeat(
    strict_node: StrictNode,
) -> None:
    cfg = (strict_node.node_dir / "haproxy" / "haproxy.cfg").read_text()
    assert "backend scimgate_fleet_heartbeat" in cfg
    assert "stick-table type integer size 1 expire 3s store gpc0" in cfg
    assert "in_table(scimgate_fleet_heartbeat)" in cfg


def test_a_killed_agent_makes_haproxy_fail_closed_by_itself(strict_node: StrictNode) -> None:
    _email, jwt = _user(strict_node)
    _wait_status(strict_node, jwt, 200, 15)
    strict_node.agent.stop(signal.SIGKILL)
    killed = time.monotonic()
    closed_after = _wait_status(strict_node, jwt, 403, 15)
    # Not before the threshold (minus one refresh interval), and not long after it.
    assert THRESHOLD - 1.5 <= time.monotonic() - killed <= THRESHOLD + 3.0, closed_after
    assert strict_node.get("/healthz") == 200  # open routes are not identity-gated
    strict_node.agent = start_agent(strict_node.node_dir, "node1", strict_node.database_url)
    _wait_status(strict_node, jwt, 200, 20)


def test_an_agent_cut_off_from_the_database_fails_closed_and_records_it(
    strict_node: StrictNode, pg_server: PostgresServer
) -> None:
    _email, jwt = _user(strict_node)
    _wait_status(strict_node, jwt, 200, 15)
    dbname = sa.engine.make_url(strict_node.database_url).database
    admin = psycopg.connect(host=str(pg_server.sock), port=pg_server.port, user="postgres",
                            dbname="postgres", autocommit=True)  # fmt: skip
    try:
        # The partition: no new connection to the database, the open ones cut.
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,)
        )
        cut = time.monotonic()
        _wait_status(strict_node, jwt, 403, 20)
        assert time.monotonic() - cut >= THRESHOLD - 1.5
    finally:
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        admin.close()
    _wait_status(strict_node, jwt, 200, 30)
    db = Database(strict_node.database_url)
    try:
        deadline = time.monotonic() + 15
        kinds: list[str] = []
        while time.monotonic() < deadline:
            with db.read() as conn:
                rows = conn.execute(
                    sa.select(tables.audit_events.c.kind, tables.audit_events.c.detail)
                    .where(tables.audit_events.c.kind.like("node.%"))
                    .order_by(tables.audit_events.c.seq)
                ).all()
            kinds = [r[0] for r in rows]
            if kinds[-2:] == ["node.fail_closed", "node.fail_open"]:
                break
            time.sleep(0.2)
        assert kinds[-2:] == ["node.fail_closed", "node.fail_open"], kinds
        detail = rows[-2][1]
        detail = json.loads(detail) if isinstance(detail, str) else detail
        assert detail["node"] == "node1" and detail["stale_seconds"] >= THRESHOLD
        with db.read() as conn:
            row = {r.name: r for r in nodes.list_nodes(conn)}["node1"]
        assert row.fail_closed is False
    finally:
        db.dispose()
