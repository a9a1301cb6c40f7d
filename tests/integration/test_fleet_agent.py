"""`scimgate agent` with real processes: two API replicas (`serve --role api`) and two
HAProxy nodes each with its agent, on one PostgreSQL. A write through one replica is
enforced on every node before its answer (fleet read-your-writes), the node table records
each agent, `status` and `audit user` show the nodes, a node whose agent is gone is not
waited for and raises the lag alert, and a restarted agent catches up."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from scimgate.app import tokens
from scimgate.haproxy.process import HAProxyProcess
from scimgate.haproxy.runtime import current_worker_pid
from scimgate.instance.fleet import prepare_api_dir, prepare_node
from scimgate.instance.up_fleet import wait_vouched
from scimgate.policy.jwtmint import mint_jwt
from scimgate.policy.model import load_policy
from scimgate.store import nodes
from scimgate.store.db import Database
from scimgate.store.outbox import head_seq
from tests.fixtures.pg import PostgresServer
from tests.support.fleet import Proc, Replica, start_agent, start_replica
from tests.support.net import free_port
from tests.support.scim import tag, user_body
from tests.support.stack import write_config
from tests.support.up import scimgate

pytestmark = [pytest.mark.postgres, pytest.mark.haproxy]

DEACTIVATE = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{"op": "replace", "path": "active", "value": False}],
}


@dataclass
class Node:
    name: str
    directory: Path
    haproxy: HAProxyProcess
    agent: Proc
    url: str
    runtime_api: str


@dataclass
class Fleet:
    api_dir: Path
    database_url: str
    token: str
    replicas: list[Replica]
    nodes: list[Node] = field(default_factory=list)

    def mint(self, email: str) -> str:
        policy = load_policy(self.api_dir / "policy.yaml")
        jwt = policy.identity.jwt
        assert jwt is not None
        return mint_jwt(
            (self.api_dir / "keys" / "jwt.key.pem").read_text(), subject_claim=jwt.claim,
            identity=email, algorithm=jwt.algorithm, issuer=jwt.issuer, audience=jwt.audience,
        )  # fmt: skip

    def node_rows(self) -> dict[str, nodes.NodeRow]:
        db = Database(self.database_url)
        try:
            with db.read() as conn:
                return {r.name: r for r in nodes.list_nodes(conn)}
        finally:
            db.dispose()


def get(url: str, token: str) -> int:
    return httpx.get(url + "/", headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code


@pytest.fixture(scope="module")
def fleet(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    url = pg_server.create_database()
    root = tmp_path_factory.mktemp("fl")
    api_dir = root / "api"
    settings = prepare_api_dir(api_dir, url)
    # Short fleet timings so that the lag tests run in seconds.
    write_config(api_dir, node_live_seconds=3.0, deprovision_alert_seconds=1.0,
                 read_your_writes_timeout=10.0)  # fmt: skip
    db = Database(url)
    try:
        token = tokens.create(db, "fleet")
    finally:
        db.dispose()
    f = Fleet(api_dir, url, token, [])
    started: list[HAProxyProcess] = []
    try:
        for i in range(2):
            name = f"node{i + 1}"
            port = free_port()
            if i == 0:
                # node1 polls the change log only every 30 s: within the tests' bounds its
                # changes arrive through LISTEN/NOTIFY (the wake-up is tested, not the poll).
                # (strict mode off there: vouching needs polls, see test_fleet_strict.py)
                write_config(root / name, change_poll_interval=30.0, strict_mode=False)
            _settings, layout, info = prepare_node(settings, root / name, haproxy_port=port)
            proc = HAProxyProcess(
                layout.config, layout.master_socket, pid_file=layout.pid_file,
                log_path=layout.log, stats_socket=info["runtime_api"],
            )  # fmt: skip
            proc.start()
            started.append(proc)
            agent = start_agent(root / name, name, url)
            f.nodes.append(
                Node(name, root / name, proc, agent, info["haproxy_url"], info["runtime_api"])
            )
        for i in range(2):
            f.replicas.append(start_replica(api_dir, f"replica{i + 1}", url))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(f.node_rows()) < 2:
            time.sleep(0.1)
        assert len(f.node_rows()) == 2, [n.agent.output()[-2000:] for n in f.nodes]
        for n in f.nodes:  # node2 is strict: it denies until its agent's first refresh
            wait_vouched(n.runtime_api)
        yield f
    finally:
        for r in f.replicas:
            r.proc.stop()
        for n in f.nodes:
            n.agent.stop()
        for proc in started:
            proc.stop()


def test_deactivation_through_one_replica_is_denied_on_every_node(fleet: Fleet) -> None:
    email = f"alice-{tag()}@example.com"
    with fleet.replicas[0].client(fleet.token) as scim:
        r = scim.post("/Users", json=user_body(email, email=email))
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
    jwt = fleet.mint(email)
    # Read-your-writes across the fleet: the 201 came after every live node applied it.
    assert [get(n.url, jwt) for n in fleet.nodes] == [200, 200]
    with fleet.replicas[1].client(fleet.token) as scim:
        t0 = time.monotonic()
        r = scim.patch(f"/Users/{uid}", json=DEACTIVATE)
        answered = time.monotonic() - t0
        assert r.status_code == 200, r.text
    assert [get(n.url, jwt) for n in fleet.nodes] == [403, 403]
    # node1 polls every 30 s: only the NOTIFY wake-up explains an answer this soon.
    assert answered < 5.0


def test_node_table_records_each_agent(fleet: Fleet) -> None:
    rows = fleet.node_rows()
    db = Database(fleet.database_url)
    try:
        with db.read() as conn:
            head = head_seq(conn)
    finally:
        db.dispose()
    for node in fleet.nodes:
        row = rows[node.name]
        assert row.worker_pid == current_worker_pid(node.runtime_api)
        assert row.haproxy_version and re.match(r"^\d+\.\d+", row.haproxy_version)
        assert row.reachable and not row.fail_closed
        assert row.cursor == head
        assert row.heartbeat_age < 3.0


def test_status_lists_every_node_with_its_lag(fleet: Fleet) -> None:
    out = scimgate("status", "--dir", str(fleet.api_dir), "--json",
                   env={"SCIMGATE_DATABASE_URL": fleet.database_url, "PATH": "/usr/bin:/bin"})  # fmt: skip
    report = json.loads(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [n["node"] for n in report["nodes"]] == ["node1", "node2"]
    assert all(n["live"] and n["lag"] == 0 for n in report["nodes"])
    text = scimgate("status", "--dir", str(fleet.api_dir),
                    env={"SCIMGATE_DATABASE_URL": fleet.database_url, "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert re.search(r"^node1\s+yes\s", text.stdout, re.M), text.stdout


def test_audit_user_shows_when_each_node_enforced_the_deprovision(fleet: Fleet) -> None:
    email = f"bob-{tag()}@example.com"
    with fleet.replicas[0].client(fleet.token) as scim:
        uid = scim.post("/Users", json=user_body(email, email=email)).json()["id"]
        assert scim.patch(f"/Users/{uid}", json=DEACTIVATE).status_code == 200
    out = scimgate("audit", "user", email, "--dir", str(fleet.api_dir), "--json",
                   env={"SCIMGATE_DATABASE_URL": fleet.database_url, "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    story = json.loads(out.stdout)
    text = json.dumps(story)
    assert "node1" in text and "node2" in text, text[:3000]
    assert "NOT CONFIRMED" not in text


def test_a_gone_agent_is_not_waited_for_alerts_and_catches_up_on_restart(fleet: Fleet) -> None:
    node = fleet.nodes[1]
    email = f"carol-{tag()}@example.com"
    with fleet.replicas[0].client(fleet.token) as scim:
        uid = scim.post("/Users", json=user_body(email, email=email)).json()["id"]
    jwt = fleet.mint(email)
    node.agent.stop(signal.SIGKILL)
    time.sleep(3.5)  # node_live_seconds: node2 is no longer live
    with fleet.replicas[0].client(fleet.token) as scim:
        t0 = time.monotonic()
        assert scim.patch(f"/Users/{uid}", json=DEACTIVATE).status_code == 200
        answered = time.monotonic() - t0
    assert answered < 5.0  # not the 10 s read-your-writes timeout: node2 is not waited for
    assert get(fleet.nodes[0].url, jwt) == 403
    # Nobody applies it there; node2's strict threshold (30 s) has not passed yet.
    assert get(node.url, jwt) == 200
    # The monitor of each replica alerts past deprovision_alert_seconds (1 s).
    deadline = time.monotonic() + 10
    alerts = ""
    while time.monotonic() < deadline:
        metrics = httpx.get(f"http://127.0.0.1:{fleet.replicas[0].port}/metrics", timeout=5).text
        alerts = "\n".join(x for x in metrics.splitlines() if "node_lag_alerts_total{" in x)
        if 'node="node2"} 1.0' in alerts:
            break
        time.sleep(0.2)
    assert 'node="node2"} 1.0' in alerts, alerts
    assert "fleet: node lags on a deprovision" in fleet.replicas[0].proc.output()
    # A new agent resyncs and catches up.
    node.agent = start_agent(node.directory, node.name, fleet.database_url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and get(node.url, jwt) != 403:
        time.sleep(0.1)
    assert get(node.url, jwt) == 403
