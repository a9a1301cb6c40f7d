"""`scimgate up --dir DIR --nodes 3 --replicas 2` as a real process: its own PostgreSQL
cluster in DIR, two API replicas behind the balancing frontend, three HAProxy nodes each
with its agent. A user deactivated through the balanced SCIM URL is denied on all three
nodes at the next request; SIGTERM stops every process it started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scimgate.policy.jwtmint import mint_jwt
from scimgate.policy.model import load_policy
from tests.support.console import sign_in
from tests.support.net import free_port
from tests.support.scim import tag, user_body
from tests.support.up import pid_alive

pytestmark = [pytest.mark.haproxy, pytest.mark.postgres]

NODE_KEYS = {"name", "haproxy_url", "runtime_api", "master_api", "haproxy_pid", "agent_pid"}


@pytest.fixture(scope="module")
def fleet_up() -> Iterator[tuple[dict[str, Any], subprocess.Popen[bytes], Path]]:
    # Not under pytest's tmp dir: the cluster runs as `postgres`, which must reach DIR/pg
    # (pytest's base temp dir is 0700).
    root = Path(tempfile.mkdtemp(prefix="scimgate-fleet-"))
    root.chmod(0o755)
    directory = root / "f"
    log = open(root / "up.log", "ab")  # noqa: SIM115
    base = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scimgate.cli", "up", "--dir", str(directory), "--nodes", "3",
         "--replicas", "2", "--port", str(free_port()), "--haproxy-port", str(base)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "SCIMGATE_DATABASE_URL"},
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 120
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, (root / "up.log").read_text()[-4000:]
            try:
                info = json.loads((directory / "stack.json").read_text())
                break
            except (OSError, ValueError):
                time.sleep(0.2)
        assert info, (root / "up.log").read_text()[-4000:]
        yield info, proc, directory
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def test_fleet_stack_json_and_a_deactivation_denied_on_every_node(
    fleet_up: tuple[dict[str, Any], subprocess.Popen[bytes], Path],
) -> None:
    info, _proc, directory = fleet_up
    assert {"scim_url", "scim_urls", "database_url", "token", "jwt_private_key", "nodes"} <= set(
        info
    )
    assert len(info["scim_urls"]) == 2 and info["scim_url"] not in info["scim_urls"]
    assert info["database_url"].startswith("postgresql") and str(directory / "pg") in info[
        "database_url"
    ].replace("%2F", "/")
    assert [n["name"] for n in info["nodes"]] == ["node1", "node2", "node3"]
    for node in info["nodes"]:
        assert set(node) >= NODE_KEYS
        assert pid_alive(node["haproxy_pid"]) and pid_alive(node["agent_pid"])
    email = f"dora-{tag()}@example.com"
    headers = {"Authorization": f"Bearer {info['token']}", "Content-Type": "application/scim+json"}
    with httpx.Client(base_url=info["scim_url"], headers=headers, timeout=30) as scim:
        r = scim.post("/Users", json=user_body(email, email=email))
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        jwt_cfg = load_policy(info["policy_file"]).identity.jwt
        assert jwt_cfg is not None
        jwt = mint_jwt(
            Path(info["jwt_private_key"]).read_text(), subject_claim=jwt_cfg.claim,
            identity=email, algorithm=jwt_cfg.algorithm, issuer=jwt_cfg.issuer,
            audience=jwt_cfg.audience,
        )  # fmt: skip

        def statuses() -> list[int]:
            return [
                httpx.get(n["haproxy_url"] + "/", headers={"Authorization": f"Bearer {jwt}"},
                          timeout=5).status_code
                for n in info["nodes"]
            ]  # fmt: skip

        assert statuses() == [200, 200, 200]
        patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                 "Operations": [{"op": "replace", "path": "active", "value": False}]}  # fmt: skip
        assert scim.patch(f"/Users/{uid}", json=patch).status_code == 200
        assert statuses() == [403, 403, 403]
        # Both replicas serve behind the balanced URL.
        for url in info["scim_urls"]:
            assert httpx.get(f"{url}/Users/{uid}", headers=headers, timeout=10).status_code == 200


def test_fleet_console_replica_readiness_and_node_configs(
    fleet_up: tuple[dict[str, Any], subprocess.Popen[bytes], Path],
) -> None:
    """After the merge with h14/h15: replica 1 serves the console (a demo operator signs
    in), a role api replica is ready without targets of its own (it reports the live
    nodes), and each node's config carries its target's bind and hard_stop_after."""
    info, _proc, directory = fleet_up
    assert info["admin_name"] == "demo-admin" and info["admin_password"].startswith("sga_")
    client = sign_in(info["console_url"], info["admin_name"], info["admin_password"])
    try:
        assert client.get("/console/").status_code == 200
    finally:
        client.close()
    for url in info["scim_urls"]:
        r = httpx.get(url.removesuffix("/scim/v2") + "/readyz", timeout=10)
        assert r.status_code == 200, r.text
        assert "configuration" not in r.json() and r.json()["targets"]["live_nodes"] == 3
    for node in info["nodes"]:
        node_dir = directory / "nodes" / node["name"]
        config = yaml.safe_load((node_dir / "scimgate.yaml").read_text())
        assert config["hard_stop_after"] == 60.0
        assert [t["bind"] for t in config["targets"]] == [
            node["haproxy_url"].removeprefix("http://")
        ]
        assert "hard-stop-after 60000ms" in Path(node["haproxy_config"]).read_text()


def test_sigterm_stops_every_process_of_the_fleet(
    fleet_up: tuple[dict[str, Any], subprocess.Popen[bytes], Path],
) -> None:
    info, proc, directory = fleet_up
    pids = [n["haproxy_pid"] for n in info["nodes"]] + [n["agent_pid"] for n in info["nodes"]]
    pids += [*info["pids"]["replicas"], info["pids"]["balancer"], info["pids"]["postgres"]]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.1)
    assert [p for p in pids if pid_alive(p)] == []
    assert not (directory / "stack.json").exists()
