"""Fault tests of the fleet, with real processes in network namespaces the tests create
(docs/fleet.md, "Failure modes"): three HAProxy nodes, each in its own namespace with its
agent (reaching PostgreSQL over TCP through the namespace's veth link), two API replicas,
one PostgreSQL. Faults: SIGKILL an agent mid-burst, SIGKILL a replica mid-write, restart
PostgreSQL, partition a node past the strict-mode threshold, reload HAProxy during a burst.

After each: no acknowledged write lost, zero drift on every node, every deprovision denied
on every node right after its acknowledgement (nodes whose agent is being faulted excepted,
until they recover), and on a cut-off node once the strict threshold has passed.

The module takes about 70 s on this machine when it is not loaded (the fixture ~25 s, each
fault 3-18 s), several minutes under heavy load.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from scimgate.app import tokens
from scimgate.haproxy.process import HAProxyProcess, find_haproxy
from scimgate.instance.fleet import prepare_api_dir, prepare_node
from scimgate.policy.jwtmint import mint_jwt
from scimgate.policy.model import load_policy
from scimgate.store import tables
from scimgate.store.db import Database
from scimgate.store.outbox import desired_entries
from scimgate.sync.layout import MapLayout
from tests.fixtures.pg import _pg_bin, _run_as
from tests.support import netns
from tests.support.fleet import Proc, Replica, start_replica
from tests.support.net import free_port
from tests.support.scim import tag, user_body
from tests.support.stack import live_shards, write_config

pytestmark = [pytest.mark.postgres, pytest.mark.haproxy]

STRICT_SECONDS = 4.0
LIVE_SECONDS = 5.0
DEACTIVATE = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{"op": "replace", "path": "active", "value": False}],
}


class TcpPostgres:
    """PostgreSQL on a unix socket (the replicas) and on the namespaces' host-side
    addresses (the agents), restartable on the same data directory."""

    def __init__(self, listen: list[str], networks: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="scimgate-fpg-"))
        self.root.chmod(0o755)
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        self.prefix = _run_as()
        if self.prefix:
            shutil.chown(self.root, self.prefix[2])
            shutil.chown(self.sock, self.prefix[2])
        self.listen, self.networks = listen, networks
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run([*self.prefix, _pg_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                        "--auth=trust", "--no-sync"], check=True, capture_output=True)  # fmt: skip
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {networks} trust\n")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*self.prefix, _pg_bin("postgres"), "-D", str(self.data), "-k", str(self.sock),
             "-c", f"listen_addresses={','.join(self.listen)}", "-c", "fsync=off",
             "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "pg.log", "ab"),  # noqa: SIM115
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok = subprocess.run([_pg_bin("pg_isready"), "-h", str(self.sock)], capture_output=True)
            if ok.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError((self.root / "pg.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
            self.proc.wait(30)
        self.proc = None

    def unix_url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@/{db}?host={self.sock}&port=5432"

    def create_database(self, name: str) -> None:
        subprocess.run([_pg_bin("psql"), "-h", str(self.sock), "-U", "postgres", "-c",
                        f'CREATE DATABASE "{name}"'], check=True, capture_output=True)  # fmt: skip


@dataclass
class FaultNode:
    name: str
    ns: netns.NodeNamespace
    directory: Path
    haproxy: HAProxyProcess
    agent: Proc
    port: int
    runtime_api: str
    layout: MapLayout
    database_url: str  # over TCP, through the namespace's link

    def start_agent(self) -> None:
        log = open(self.directory / "agent.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [*self.ns.prefix(), sys.executable, "-m", "scimgate.cli", "agent", "--dir",
             str(self.directory), "--name", self.name],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "SCIMGATE_DATABASE_URL": self.database_url},
        )  # fmt: skip
        log.close()
        self.agent = Proc(self.name, proc, self.directory / "agent.log")


@dataclass
class Fleet:
    pg: TcpPostgres
    url: str
    api_dir: Path
    token: str
    replicas: list[Replica]
    nodes: list[FaultNode]
    control_jwt: str = ""
    deprovisioned: list[str] = field(default_factory=list)  # e-mails, acknowledged
    acked_ids: list[str] = field(default_factory=list)

    def jwt(self, email: str) -> str:
        jwt = load_policy(self.api_dir / "policy.yaml").identity.jwt
        assert jwt is not None
        return mint_jwt(
            (self.api_dir / "keys" / "jwt.key.pem").read_text(), subject_claim=jwt.claim,
            identity=email, algorithm=jwt.algorithm, issuer=jwt.issuer, audience=jwt.audience,
        )  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    octet, run_tag = netns.subnet_octet(), f"{os.getpid() % 1000}"
    namespaces: list[netns.NodeNamespace] = []
    haproxies: list[HAProxyProcess] = []
    nodes: list[FaultNode] = []
    replicas: list[Replica] = []
    fleet: Fleet | None = None
    pg: TcpPostgres | None = None
    try:
        for i in range(1, 4):
            namespaces.append(netns.NodeNamespace.create(run_tag, i, octet))
        pg = TcpPostgres([ns.host_addr for ns in namespaces], f"10.{octet}.0.0/16")
        pg.start()
        pg.create_database("fleet")
        url = pg.unix_url("fleet")
        root = tmp_path_factory.mktemp("ff")
        api = prepare_api_dir(root / "api", url)
        write_config(root / "api", node_live_seconds=LIVE_SECONDS, read_your_writes_timeout=15.0)
        db = Database(url)
        try:
            token = tokens.create(db, "faults")
        finally:
            db.dispose()
        for i, ns in enumerate(namespaces, start=1):
            directory = root / f"node{i}"
            write_config(directory, strict_mode_seconds=STRICT_SECONDS)
            port = free_port()
            _s, layout, info = prepare_node(api, directory, haproxy_port=port)
            wrapper = directory / "haproxy-ns"
            wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {find_haproxy()} "$@"\n')
            wrapper.chmod(0o755)
            proc = HAProxyProcess(layout.config, layout.master_socket, binary=str(wrapper),
                                  pid_file=layout.pid_file, log_path=layout.log,
                                  stats_socket=info["runtime_api"])  # fmt: skip
            proc.start()
            haproxies.append(proc)
            node = FaultNode(
                f"node{i}", ns, directory, proc, None, port, info["runtime_api"],  # type: ignore[arg-type]
                MapLayout(info["map_dir"], int(info["map_shards"])).with_overlay(),
                f"postgresql+psycopg://postgres@{ns.host_addr}:5432/fleet",
            )  # fmt: skip
            node.start_agent()
            nodes.append(node)
        for j in (1, 2):
            replicas.append(start_replica(root / "api", f"replica{j}", url))
        fleet = Fleet(pg, url, root / "api", token, replicas, nodes)
        control = f"control-{tag()}@example.com"
        with replicas[0].client(token) as scim:
            assert scim.post("/Users", json=user_body(control, email=control)).status_code == 201
        fleet.control_jwt = fleet.jwt(control)
        for node in nodes:  # every agent caught up and vouching
            _until(lambda n=node: n.ns.get(n.port, "/", fleet.control_jwt) == 200, 30)  # type: ignore[misc]
        yield fleet
    finally:
        # By what was started, even if the fleet was never complete (the tests may have
        # replaced a replica or an agent: fleet's lists hold the current ones).
        for r in fleet.replicas if fleet is not None else replicas:
            r.proc.stop()
        for n in nodes:
            if n.agent is not None:
                n.agent.stop()
        for h in haproxies:
            h.stop()
        if pg is not None:
            pg.stop()
            shutil.rmtree(pg.root, ignore_errors=True)
        for ns in namespaces:
            ns.delete()


def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s"
        time.sleep(0.1)


def _burst(fleet: Fleet, pairs: int, fault: Callable[[], None], excluded: set[str]) -> list[str]:
    """Create and deactivate ``pairs`` users through both replicas in turn; run ``fault`` in
    another thread after a third of them. Each acknowledged deactivation is checked at once
    on every node not in ``excluded`` (read-your-writes promised it). Returns the failures."""
    failures: list[str] = []
    fault_thread = threading.Thread(target=fault)
    for n in range(pairs):
        if n == pairs // 3:
            fault_thread.start()
        replica = fleet.replicas[n % 2]
        email = f"burst-{tag()}@example.com"
        try:
            with replica.client(fleet.token) as scim:
                r = scim.post("/Users", json=user_body(email, email=email))
                if r.status_code != 201:
                    continue  # not acknowledged: no promise made
                uid = r.json()["id"]
                fleet.acked_ids.append(uid)
                if scim.patch(f"/Users/{uid}", json=DEACTIVATE).status_code != 200:
                    continue
        except httpx.HTTPError:
            continue
        fleet.deprovisioned.append(email)
        jwt = fleet.jwt(email)
        for node in fleet.nodes:
            if node.name not in excluded and (status := node.ns.get(node.port, "/", jwt)) != 403:
                failures.append(f"{email} answered {status} on {node.name} after its ack")
    if fault_thread.is_alive() or not fault_thread.ident:
        if not fault_thread.ident:
            fault_thread.start()
        fault_thread.join(60)
    return failures


def _verify(fleet: Fleet) -> None:
    """No acknowledged write lost; zero drift on every node; every deprovisioned identity
    denied and the control user allowed on every node."""
    db = Database(fleet.url)
    try:
        with db.read() as conn:
            ids = {r[0] for r in conn.execute(sa.select(tables.users.c.id))}
            want = desired_entries(conn)
    finally:
        db.dispose()
    assert set(fleet.acked_ids) <= ids
    for node in fleet.nodes:

        def drift(n: FaultNode = node) -> bool:
            try:
                got = {
                    k: v for shard in live_shards(n.runtime_api, n.layout) for k, v in shard.items()
                }
            except OSError:
                return False
            return got == want

        _until(drift, 30)
        _until(lambda n=node: n.ns.get(n.port, "/", fleet.control_jwt) == 200, 30)  # type: ignore[misc]
        for email in fleet.deprovisioned[-10:]:
            assert node.ns.get(node.port, "/", fleet.jwt(email)) == 403, (node.name, email)


def test_sigkill_an_agent_mid_burst(fleet: Fleet) -> None:
    node = fleet.nodes[0]
    failures = _burst(fleet, 8, lambda: node.agent.stop(signal.SIGKILL), {node.name})
    node.start_agent()
    assert failures == []
    _verify(fleet)


def test_sigkill_a_replica_mid_write(fleet: Fleet) -> None:
    victim = fleet.replicas[1]
    failures = _burst(fleet, 8, lambda: victim.proc.stop(signal.SIGKILL), set())
    fleet.replicas[1] = start_replica(fleet.api_dir, "replica2b", fleet.url)
    assert failures == []
    _verify(fleet)


def test_restart_postgresql_mid_burst(fleet: Fleet) -> None:
    def restart() -> None:
        fleet.pg.stop()
        time.sleep(0.5)
        fleet.pg.start()

    failures = _burst(fleet, 8, restart, set())
    assert failures == []
    _verify(fleet)


def test_reload_haproxy_on_one_node_during_a_burst(fleet: Fleet) -> None:
    node = fleet.nodes[1]
    failures = _burst(fleet, 8, lambda: node.haproxy.reload(), set())
    assert failures == []
    _verify(fleet)


def test_partition_a_node_past_the_strict_threshold(fleet: Fleet) -> None:
    node = fleet.nodes[2]
    email = f"cut-{tag()}@example.com"
    with fleet.replicas[0].client(fleet.token) as scim:
        uid = scim.post("/Users", json=user_body(email, email=email)).json()["id"]
    jwt = fleet.jwt(email)
    _until(lambda: node.ns.get(node.port, "/", jwt) == 200, 15)
    node.ns.partition()
    cut = time.monotonic()
    try:
        with fleet.replicas[0].client(fleet.token) as scim:
            # Acknowledged once node3 is no longer live (LIVE_SECONDS), not before.
            assert scim.patch(f"/Users/{uid}", json=DEACTIVATE).status_code == 200
        fleet.deprovisioned.append(email)
        for other in fleet.nodes[:2]:
            assert other.ns.get(other.port, "/", jwt) == 403
        # The threshold counts from the agent's last refresh, which follows its last read of
        # the change log by at most one poll + one heartbeat (+0.5 s): closed by then.
        time.sleep(max(0.0, STRICT_SECONDS + 3.0 - (time.monotonic() - cut)))
        # Cut off past the threshold: the node fails closed by itself, for everyone.
        assert node.ns.get(node.port, "/", jwt) == 403
        assert node.ns.get(node.port, "/", fleet.control_jwt) == 403
        assert node.ns.get(node.port, "/healthz", "") == 200  # open routes still answer
    finally:
        node.ns.heal()
    _verify(fleet)
