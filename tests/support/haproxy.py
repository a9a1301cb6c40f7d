"""The one HAProxy launcher of the test suite: a real HAProxy in master-worker mode, as the
product runs it (``scimgate.haproxy.process.HAProxyProcess``), started by a test and
stopped by its PID.

``launch(config)`` starts HAProxy on a config file and waits until its worker answers (and,
given ``port``, until that port accepts connections); ``started(proc)`` stops it whatever
happens; ``up_haproxy(up_info)`` is the command line `scimgate up` uses for an instance's
HAProxy. The pytest fixtures over it are in ``tests/fixtures/haproxy.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from scimgate.haproxy import RuntimeAddress, RuntimeClient
from scimgate.haproxy.process import HAProxyProcess, check_config
from scimgate.sync.apply import ENTRY_VALIDATOR

JWT_CACHE_TABLE = "scimgate_jwt_cache"  # the verified-token cache (policy.render_identity)


class RunningHAProxy(HAProxyProcess):
    """An HAProxyProcess that also knows the test's directory and ports."""

    workdir: Path
    ports: list[int]

    @property
    def port(self) -> int:
        return self.ports[0]

    def client(self, timeout: float = 5.0) -> RuntimeClient:
        """A client with the identities maps' allow-lists (policy's grammar), as the sync
        engine's clients have."""
        assert self.stats_address is not None, "launched without a stats socket"
        return RuntimeClient(
            self.stats_address, timeout, validator=ENTRY_VALIDATOR, master=self.master_address
        )

    def restart(self) -> None:
        """Full stop and start (a new master and worker, same sockets and ports)."""
        self.stop()
        self.start()

    def get(
        self, path: str = "/", headers: Sequence[tuple[str, str]] = ()
    ) -> tuple[int, dict[str, str], str]:
        """GET ``path`` on the first port (Host app.example.com unless given): status,
        headers (lower-case names), body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.putrequest("GET", path, skip_host=True)
        if not any(k.lower() == "host" for k, _ in headers):
            conn.putheader("Host", "app.example.com")
        for k, v in headers:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read().decode()
        out = (resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
        conn.close()
        return out

    def cli(self, command: str) -> str:
        """One raw command on the worker's stats socket (non-interactive)."""
        assert self.stats_address is not None and self.stats_address.path is not None
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.stats_address.path)
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def log_text(self) -> str:
        """What HAProxy wrote (its own messages and a ``log stdout`` access log)."""
        return self.output()


def assert_config_valid(cfg: Path) -> None:
    """`haproxy -c` accepts ``cfg`` (its map files must exist)."""
    ok, output = check_config(cfg)
    assert ok, output


class BearerGate:
    """A launched HAProxy enforcing a rendered policy, as a client with a bearer token sees
    it: a GET, and a stick table (the verified-token cache's by default)."""

    def __init__(self, hx: RunningHAProxy) -> None:
        self.hx = hx
        self.port = hx.port

    def get(self, token: str | None, path: str = "/") -> tuple[int, dict[str, str]]:
        headers = [("Authorization", f"Bearer {token}")] if token is not None else []
        status, response_headers, _body = self.hx.get(path, headers)
        return status, response_headers

    def cli(self, command: str) -> str:
        return self.hx.cli(command)

    def table(self, name: str = JWT_CACHE_TABLE) -> dict[str, dict[str, str]]:
        """``show table``: hex key -> its data fields (gpt0, exp, use)."""
        rows: dict[str, dict[str, str]] = {}
        for line in self.cli(f"show table {name}").splitlines():
            m = re.match(r"^0x[0-9a-f]+: key=(\S+) (.*)$", line)
            if m:
                rows[m.group(1).upper()] = dict(kv.split("=", 1) for kv in m.group(2).split())
        return rows

    def stop(self) -> None:
        self.hx.stop()


def launch_gate(cfg: Path, port: int, stats_socket: Path) -> BearerGate:
    return BearerGate(launch(cfg, ports=[port], stats_socket=stats_socket))


def wait_for_port(port: int, proc: HAProxyProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.running:
            raise RuntimeError(proc.output())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.stop()
    raise RuntimeError(f"haproxy did not listen on 127.0.0.1:{port}")


def launch(
    config: Path,
    *,
    ports: Sequence[int] = (),
    stats_socket: Path | None = None,
    master_socket: Path | None = None,
    log: Path | None = None,
    pid_file: Path | None = None,
    binary: str | None = None,
    start: bool = True,
) -> RunningHAProxy:
    """HAProxy on ``config`` (master CLI and log next to it unless given). Started unless
    ``start=False``; then ready: a worker answers (on ``stats_socket`` too, when given) and
    the first of ``ports`` accepts connections."""
    base = config.parent
    proc = RunningHAProxy(
        config,
        master_socket or base / f"{config.stem}.master.sock",
        binary=binary,
        pid_file=pid_file or base / f"{config.stem}.pid",
        log_path=log or base / f"{config.stem}.log",
        stats_socket=RuntimeAddress("unix", path=str(stats_socket)) if stats_socket else None,
    )
    proc.workdir = base
    proc.ports = list(ports)
    if start:
        proc.start()
        if proc.ports:
            wait_for_port(proc.port, proc)
    return proc


def up_haproxy(info: dict[str, Any], directory: Path | None = None) -> RunningHAProxy:
    """Not started: an HAProxy with the command line `scimgate up` uses (same config,
    sockets, pid file, log) for the instance whose stack.json is ``info``, or for another
    haproxy/ directory laid out the same way (e.g. haproxy2/)."""
    base = directory or Path(info["haproxy_config"]).parent
    return launch(
        base / "haproxy.cfg",
        binary=info.get("haproxy_binary"),  # the one `up` ran
        master_socket=base / "master.sock",
        stats_socket=base / "admin.sock",
        log=base / "haproxy.log",
        pid_file=base / "haproxy.pid",
        start=False,
    )


@contextlib.contextmanager
def started(proc: HAProxyProcess) -> Iterator[HAProxyProcess]:
    """Start an HAProxy we own; stop it by PID at the end, whatever happens."""
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
