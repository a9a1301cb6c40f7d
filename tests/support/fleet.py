"""A fleet on loopback for the tests: API replicas (`scimgate serve --role api`) and agents
(`scimgate agent`) as real processes on one PostgreSQL database, each stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.net import free_port


@dataclass
class Proc:
    """One process a test started (stopped by its PID)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def spawn(name: str, log: Path, *args: str, env: dict[str, str] | None = None) -> Proc:
    out = open(log, "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "scimgate.cli", *args],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out.close()
    return Proc(name, proc, log)


@dataclass
class Replica:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scim/v2"

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
            timeout=30,
        )


def start_replica(api_dir: Path, name: str, database_url: str, timeout: float = 90) -> Replica:
    """`scimgate serve --role api` on a free port; waits until /healthz answers."""
    port = free_port()
    proc = spawn(
        name, api_dir / f"{name}.log", "serve", "--dir", str(api_dir), "--role", "api",
        "--port", str(port), env={"SCIMGATE_DATABASE_URL": database_url},
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"{name} exited:\n{proc.output()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return Replica(proc, port)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.stop(signal.SIGKILL)
    raise AssertionError(f"{name} did not answer within {timeout}s:\n{proc.output()[-3000:]}")


def start_agent(node_dir: Path, name: str, database_url: str) -> Proc:
    """`scimgate agent` for the node in ``node_dir`` (its config's one target)."""
    return spawn(
        name, node_dir / "agent.log", "agent", "--dir", str(node_dir), "--name", name,
        env={"SCIMGATE_DATABASE_URL": database_url},
    )  # fmt: skip
