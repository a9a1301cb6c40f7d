"""`scimgate up --dir DIR` as a real process, for the e2e tests: start it on free loopback
ports, wait for its stack.json, talk to it (SCIM, HAProxy, JWTs as the IdP issues them),
stop it by PID and make sure no HAProxy of its directory outlives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from scimgate.policy.jwtmint import mint_jwt
from tests.support.net import free_port


def pid_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


def haproxy_pids_for(directory: Path) -> list[int]:
    """Live haproxy processes whose command line names this directory's config."""
    cfg = str(directory.resolve() / "haproxy" / "haproxy.cfg").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and b"haproxy" in cmdline[0] and cfg in cmdline and pid_alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def scimgate(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scimgate.cli", *args], capture_output=True, text=True,
        timeout=60, **kw,
    )  # fmt: skip


@dataclass
class UpStack:
    """A running `scimgate up` process and what it wrote to stack.json."""

    directory: Path
    proc: subprocess.Popen[bytes]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def log(self) -> str:
        return (self.directory / "up.log").read_text(errors="replace")

    def scim(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.info["scim_url"],
            headers={
                "Authorization": f"Bearer {self.info['token']}",
                "Content-Type": "application/scim+json",
            },
            timeout=30,
        )

    def browser(self) -> httpx.Client:
        """A keep-alive client for HAProxy: later requests reuse the same connection."""
        return httpx.Client(base_url=self.info["haproxy_url"], timeout=10)

    def mint(self, subject: str, *scopes: str, ttl: int = 300) -> str:
        """A JWT as the IdP would issue it, signed with the instance's demo key (in-process;
        `scimgate jwt mint` does the same, see :meth:`mint_cli`)."""
        from scimgate.policy.model import load_policy

        jwt = load_policy(self.info["policy_file"]).identity.jwt
        assert jwt is not None
        return mint_jwt(
            Path(self.info["jwt_private_key"]).read_text(), subject_claim=jwt.claim,
            identity=subject, algorithm=jwt.algorithm, issuer=jwt.issuer,
            audience=jwt.audience, scopes=scopes, ttl_seconds=ttl,
        )  # fmt: skip

    def mint_cli(self, subject: str, *scopes: str) -> str:
        args = ["jwt", "mint", "--dir", str(self.directory), subject]
        for scope in scopes:
            args += ["--scope", scope]
        out = scimgate(*args)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in haproxy_pids_for(self.directory):  # never leave one behind, even on failure
            os.kill(pid, signal.SIGKILL)
        return int(self.proc.returncode)


def launch(directory: Path, *extra: str, haproxy: str | None = None) -> UpStack:
    """``haproxy``: the binary `up` runs (SCIMGATE_HAPROXY), else the default one."""
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "up.log", "ab")  # noqa: SIM115
    env = dict(os.environ)
    if haproxy is not None:
        env["SCIMGATE_HAPROXY"] = haproxy
    proc = subprocess.Popen(
        [sys.executable, "-m", "scimgate.cli", "up", "--dir", str(directory),
         "--port", str(free_port()), "--haproxy-port", str(free_port()),
         "--scim-tls-port", str(free_port()), *extra],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    log.close()
    return UpStack(directory, proc)


def start_up(
    directory: Path, *extra: str, timeout: float = 60, haproxy: str | None = None
) -> UpStack:
    """Start `scimgate up` (on the ``haproxy`` binary if given) and wait until stack.json
    names this process."""
    up = launch(directory, *extra, haproxy=haproxy)
    stack = directory / "stack.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.proc.poll() is not None:
            up.stop()
            raise AssertionError(f"scimgate up exited ({up.proc.returncode}):\n{up.log[-4000:]}")
        try:
            info = json.loads(stack.read_text())
            if info.get("pids", {}).get("scimgate") == up.proc.pid:
                up.info = info
                return up
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    up.stop()
    raise AssertionError(f"no stack.json within {timeout}s:\n{up.log[-4000:]}")
