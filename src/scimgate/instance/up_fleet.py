"""`scimgate up --dir DIR --nodes N --replicas M`: a whole fleet on this host, in the
foreground, for trying the fleet shape and for the fleet tests.

What runs (docs/fleet.md): one PostgreSQL (a throwaway cluster in DIR/pg unless
``SCIMGATE_DATABASE_URL`` is set), M API replicas (`scimgate serve --role api`, DIR/api)
behind one load-balancing HAProxy frontend (DIR/lb, round robin, health-checked), and N
HAProxy nodes (DIR/nodes/nodeK), each with its own `scimgate agent` on its local admin
socket. DIR/stack.json says where everything is; SIGTERM/SIGINT stops it all.

Does: prepare the directories (``instance.fleet``), start and stop the processes by PID,
write stack.json.
Does not: supervise (a process that dies stays dead: `scimgate status` and the lag alert
show it; production runs each piece under systemd, ``deploy/systemd``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from scimgate.config import redact_url
from scimgate.haproxy.process import HAProxyProcess, check_config
from scimgate.instance.fleet import prepare_api_dir, prepare_node
from scimgate.instance.layout import DemoError, write_private
from scimgate.instance.pg_cluster import LocalCluster
from scimgate.instance.serve import Stop, unwind_on_signals
from scimgate.instance.up import ensure_admin, ensure_token, write_stack
from scimgate.store.db import Database

DEFAULT_SCIM_PORT = 8000
DEFAULT_NODE_PORT = 8080  # node K listens on DEFAULT_NODE_PORT + K - 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def balancer_config(bind: str, servers: list[tuple[str, int]], admin_socket: Path) -> str:
    """The replicas' load-balancing frontend: round robin, /healthz checks, a replica that
    fails its checks is taken out (the IdP retries a failed write; SCIM writes are
    idempotent enough for that: a duplicate POST answers 409)."""
    lines = [
        "global",
        f"    stats socket {admin_socket} mode 600 level admin",
        "    hard-stop-after 5s",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    option redispatch",
        "    retries 2",
        "",
        "frontend scim",
        f"    bind {bind}",
        "    default_backend replicas",
        "",
        "backend replicas",
        "    balance roundrobin",
        "    option httpchk GET /healthz",
        *(
            f"    server {name} 127.0.0.1:{port} check inter 1s fall 2 rise 1"
            for name, port in servers
        ),
        "",
    ]
    return "\n".join(lines)


class _Child:
    def __init__(self, name: str, log: Path, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "scimgate.cli", *args], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
                start_new_session=True,
            )  # fmt: skip

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def _wait_healthy(url: str, child: _Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise DemoError(f"{child.name} exited with {child.popen.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise DemoError(f"{child.name} did not answer {url} within {timeout}s")


def bring_up_fleet(
    directory: Path,
    *,
    nodes: int,
    replicas: int,
    port: int | None = None,
    haproxy_port: int | None = None,
    console_port: int | None = None,
) -> None:
    """The fleet in the foreground until SIGTERM/SIGINT. The admin console is served by
    replica 1 on loopback (``console_port``, else a free port) with a demo operator, as `up`
    does; the other replicas serve none (one console is enough to look at one store)."""
    if nodes < 1 or replicas < 1:
        raise DemoError("--nodes and --replicas must be at least 1")
    unwind_on_signals()
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    cluster: LocalCluster | None = None
    haproxies: list[HAProxyProcess] = []
    children: list[_Child] = []
    try:
        url = os.environ.get("SCIMGATE_DATABASE_URL")
        if not url:
            cluster = LocalCluster(directory / "pg")
            cluster.start()
            url = cluster.url
        env = {"SCIMGATE_DATABASE_URL": url}
        api = prepare_api_dir(directory / "api", url)
        db = Database(url)
        try:
            token = ensure_token(db, directory)
            admin_name, admin_password = ensure_admin(db, directory)
        finally:
            db.dispose()
        base = haproxy_port or DEFAULT_NODE_PORT
        node_info: list[dict[str, Any]] = []
        for k in range(1, nodes + 1):
            name = f"node{k}"
            node_dir = directory / "nodes" / name
            _s, layout, info = prepare_node(api, node_dir, haproxy_port=base + k - 1)
            proc = HAProxyProcess(
                layout.config, layout.master_socket, pid_file=layout.pid_file,
                log_path=layout.log, stats_socket=info["runtime_api"],
            )  # fmt: skip
            proc.start()
            haproxies.append(proc)
            agent = _Child(f"agent {name}", node_dir / "agent.log",
                           ["agent", "--dir", str(node_dir), "--name", name], env)  # fmt: skip
            children.append(agent)
            node_info.append({
                "name": name, "haproxy_url": info["haproxy_url"],
                "runtime_api": info["runtime_api"], "master_api": info["master_api"],
                "map_dir": info["map_dir"], "haproxy_config": info["haproxy_config"],
                "haproxy_pid": proc.pid, "agent_pid": agent.popen.pid,
            })  # fmt: skip
        servers: list[tuple[str, int]] = []
        console = f"127.0.0.1:{console_port or _free_port()}"
        for j in range(1, replicas + 1):
            rport = _free_port()
            console_args = ["--console-bind", console] if j == 1 else []
            replica = _Child(f"replica{j}", directory / "api" / f"replica{j}.log",
                             ["serve", "--dir", str(api.base_dir), "--role", "api",
                              "--port", str(rport), *console_args], env)  # fmt: skip
            children.append(replica)
            servers.append((f"replica{j}", rport))
        for (_name, rport), child in zip(servers, children[nodes:], strict=True):
            _wait_healthy(f"http://127.0.0.1:{rport}/healthz", child)
        lb_dir = directory / "lb"
        lb_dir.mkdir(exist_ok=True)
        lb_port = port or DEFAULT_SCIM_PORT
        lb_cfg = lb_dir / "haproxy.cfg"
        write_private(
            lb_cfg, balancer_config(f"127.0.0.1:{lb_port}", servers, lb_dir / "admin.sock")
        )
        ok, output = check_config(lb_cfg)
        if not ok:
            raise DemoError(f"haproxy -c rejected {lb_cfg}:\n{output}")
        lb = HAProxyProcess(lb_cfg, lb_dir / "master.sock", pid_file=lb_dir / "haproxy.pid",
                            log_path=lb_dir / "haproxy.log")  # fmt: skip
        lb.start()
        haproxies.append(lb)
        info = {
            "dir": str(directory),
            "scim_url": f"http://127.0.0.1:{lb_port}/scim/v2",
            "scim_urls": [f"http://127.0.0.1:{p}/scim/v2" for _n, p in servers],
            "database_url": redact_url(url),
            "token": token,
            "token_file": str(directory / "token"),
            "jwt_private_key": str(api.base_dir / "keys" / "jwt.key.pem"),
            "policy_file": str(api.policy_file),
            "console_url": f"http://{console}/console/",
            "admin_name": admin_name,
            "admin_password": admin_password,
            "admin_file": str(directory / "console-admin"),
            "nodes": node_info,
            "pids": {
                "up": os.getpid(), "balancer": lb.pid,
                "replicas": [c.popen.pid for c in children[nodes:]],
                "postgres": cluster.pid if cluster is not None else None,
            },
        }  # fmt: skip
        _wait_nodes(url, [n["name"] for n in node_info], children[:nodes])
        for node in node_info:  # strict nodes deny until their agent's first refresh
            wait_vouched(node["runtime_api"])
        write_stack(directory, info)
        print(json.dumps({"event": "scimgate up (fleet)",
                          **{k: v for k, v in info.items()
                             if k not in ("token", "admin_password")}}), flush=True)  # fmt: skip
        threading.Event().wait()  # until a signal unwinds
    except Stop:
        pass
    finally:
        for child in reversed(children):
            child.stop()
        for proc in reversed(haproxies):
            proc.stop()
        if cluster is not None:
            cluster.stop()
        stack = directory / "stack.json"
        if stack.exists():
            stack.unlink()


def wait_vouched(runtime_api: str, timeout: float = 60.0) -> None:
    """Until the node's HAProxy holds its agent's heartbeat entry (strict mode; returns at
    once for a node without the heartbeat table)."""
    from scimgate.haproxy import HAProxyRuntimeError, RuntimeClient
    from scimgate.policy.render_fleet import FLEET_HEARTBEAT_TABLE

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(HAProxyRuntimeError, OSError),
            RuntimeClient(runtime_api, 2.0, cli_timeout=None) as client,
        ):
            if f"table: {FLEET_HEARTBEAT_TABLE}," not in client.execute("show table"):
                return
            if "key=1 " in client.execute(f"show table {FLEET_HEARTBEAT_TABLE}"):
                return
        time.sleep(0.1)
    raise DemoError(f"the agent of {runtime_api} did not vouch within {timeout}s (strict mode)")


def _wait_nodes(url: str, names: list[str], agents: list[_Child], timeout: float = 60.0) -> None:
    """Until every agent has reported its node (its first resync done)."""
    from scimgate.store import nodes as node_table

    db = Database(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for agent in agents:
                if agent.popen.poll() is not None:
                    raise DemoError(f"{agent.name} exited with {agent.popen.returncode}")
            with db.read() as conn:
                rows = {r.name: r for r in node_table.list_nodes(conn)}
            if all(n in rows and rows[n].reachable and rows[n].heartbeat_age < 5 for n in names):
                return
            time.sleep(0.1)
        raise DemoError(f"not every node reported within {timeout}s")
    finally:
        db.dispose()
