"""Network namespaces the fault tests create: one per HAProxy node, joined to the host by a
veth pair with its own /30 (host side .1, node side .2). A partition is the host side of
the link taken down. Everything is removed by the fixture that made it."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def unavailable() -> str | None:
    """Why namespaces cannot be used here (None: they can)."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"sgprobe{os.getpid() % 100000}"
    out = _ip("netns", "add", probe)
    if out.returncode != 0:
        return f"ip netns add failed: {out.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


def subnet_octet() -> int:
    """A second octet for this test run's 10.X.Y.0/30 links (runs in parallel differ)."""
    return random.randint(64, 250)


@dataclass
class NodeNamespace:
    name: str
    host_if: str
    host_addr: str
    node_addr: str

    @classmethod
    def create(cls, tag: str, index: int, octet: int) -> NodeNamespace:
        ns = cls(f"sg{tag}n{index}", f"sg{tag}h{index}", f"10.{octet}.{index}.1",
                 f"10.{octet}.{index}.2")  # fmt: skip
        node_if = f"sg{tag}v{index}"
        steps = [
            ("netns", "add", ns.name),
            ("link", "add", ns.host_if, "type", "veth", "peer", "name", node_if),
            ("link", "set", node_if, "netns", ns.name),
            ("addr", "add", f"{ns.host_addr}/30", "dev", ns.host_if),
            ("link", "set", ns.host_if, "up"),
            ("-n", ns.name, "addr", "add", f"{ns.node_addr}/30", "dev", node_if),
            ("-n", ns.name, "link", "set", node_if, "up"),
            ("-n", ns.name, "link", "set", "lo", "up"),
        ]
        for step in steps:
            out = _ip(*step)
            if out.returncode != 0:
                ns.delete()
                raise RuntimeError(f"ip {' '.join(step)}: {out.stderr.strip()}")
        return ns

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def partition(self) -> None:
        assert _ip("link", "set", self.host_if, "down").returncode == 0

    def heal(self) -> None:
        assert _ip("link", "set", self.host_if, "up").returncode == 0

    def get(self, port: int, path: str, bearer: str) -> int:
        """GET on the node's HAProxy (127.0.0.1 inside the namespace): the status."""
        out = subprocess.run(
            [*self.prefix(), "curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code}",
             "-H", f"Authorization: Bearer {bearer}", f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, timeout=15,
        )  # fmt: skip
        return int(out.stdout or 0)

    def delete(self) -> None:
        _ip("link", "del", self.host_if)  # removes the peer too
        _ip("netns", "del", self.name)
