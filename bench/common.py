"""Shared helpers: environment block, /proc readings, percentiles, server launchers."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class HarnessError(RuntimeError):
    """The bench itself is broken (a server did not start, requests failed): exit non-zero."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- environment -------------------------------------------------------------------------


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def haproxy_bin() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    hap = haproxy_bin()
    commit = _cmd(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    dirty = bool(_cmd(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]))
    wrk = _cmd(["sh", "-c", "wrk -v 2>&1 | head -1"])
    pg = ""
    for d in ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin"):
        if Path(d, "postgres").exists():
            pg = _cmd([str(Path(d, "postgres")), "--version"])
            break
    return {
        "machine": {
            "cores": os.cpu_count(),
            "cpu_model": model,
            "mem_gb": round(mem_kb / 1e6, 1),
            "kernel": platform.release(),
            "loadavg_at_start": os.getloadavg()[0],
        },
        "versions": {
            "python": platform.python_version(),
            "haproxy": (_cmd([hap, "-v"]).splitlines() or [""])[0] if hap else None,
            "scimgate": ver("scimgate"),
            "scimgate_commit": commit,
            "scimgate_worktree_dirty": dirty,
            "scim2_server": ver("scim2-server"),
            "scim2_models": ver("scim2-models"),
            "uvicorn": ver("uvicorn"),
            "sqlalchemy": ver("SQLAlchemy"),
            "postgresql": pg,
            "wrk": wrk,
        },
        "commit": commit,
    }


# --- /proc -------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def process_tree(pid: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime (+ reaped children's cutime+cstime) of a process and all its descendants."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2 :].split()
        # fields[0] is state (field 3); utime=14, stime=15, cutime=16, cstime=17 (1-based)
        total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


def _stat_cpu(path: str) -> float:
    """utime+stime (seconds) of one /proc stat file; 0 when the task is gone."""
    try:
        with open(path) as f:
            s = f.read()
    except OSError:
        return 0.0
    fields = s[s.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu(pid: int) -> float:
    """utime+stime of one process (all its threads, living and ended), not its children:
    `scimgate up`'s HAProxy is a child and is counted apart."""
    return _stat_cpu(f"/proc/{pid}/stat")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Per thread of ``pid``: (kernel name, utime+stime seconds). The sync engine names its
    threads ``sync-…`` (scimgate.sync.threads); every other thread is the API's."""
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        out[int(tid)] = (comm, _stat_cpu(f"/proc/{pid}/task/{tid}/stat"))
    return out


def sync_cpu(pid: int) -> float:
    """CPU of the sync engine's threads (kernel names ``sync-…``) of ``pid``. Read before and
    after a phase: the threads live as long as the engine, so the difference is the
    engine's share (a helper thread that ends inside the phase would be missed; the
    engine starts one only for a resync)."""
    return sum(cpu for comm, cpu in thread_cpu(pid).values() if comm.startswith("sync-"))


def rss_mb(pid: int, tree: bool = False) -> float:
    """VmRSS in MB (kB/1000), of one process or (tree=True) summed over its tree."""
    pids = process_tree(pid) if tree else [pid]
    kb = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        kb += int(line.split()[1])
        except OSError:
            continue
    return kb / 1000


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --- statistics ---------------------------------------------------------------------------


def pct(values: Iterable[float], q: float) -> float | None:
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def r3(x: float | None, n: int = 3) -> float | None:
    return None if x is None else round(x, n)


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 30, *, ok_only: bool = False
) -> None:
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"process for {url} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
            c.request("GET", u.path or "/")
            r = c.getresponse()
            r.read()
            c.close()
            if not ok_only or r.status == 200:
                return
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    raise HarnessError(f"{url} did not answer in {timeout} s")


def stop_proc(proc: subprocess.Popen[Any] | None, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Server:
    """A SCIM server under test: where to send requests and whose CPU to count."""

    name: str
    host: str
    port: int
    prefix: str  # "/scim/v2" or "/v2"
    token: str
    pid: int
    extra_pids: list[int] = field(default_factory=list)  # e.g. the PostgreSQL cluster
    stop_fn: Any = None
    # `scimgate up`: the server's CPU is its own process only (HAProxy is its child, counted
    # apart), split into the sync engine's threads and the rest (the API).
    deployed: bool = False
    haproxy_pid: int | None = None

    def cpu(self) -> float:
        return process_cpu(self.pid) if self.deployed else cpu_seconds(self.pid)

    def probes(self) -> dict[str, Any]:
        """Extra CPU readings taken around each measured run (see loadgen.run_load)."""
        if not self.deployed:
            return {}
        out: dict[str, Any] = {"sync": lambda: sync_cpu(self.pid)}
        if self.haproxy_pid is not None:
            hap = self.haproxy_pid
            out["haproxy"] = lambda: cpu_seconds(hap)
        return out

    def extra_cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.extra_pids)

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/scim+json",
            "Accept": "application/scim+json",
        }

    def stop(self) -> None:
        if self.stop_fn is not None:
            self.stop_fn()
            self.stop_fn = None


def start_peer(workdir: Path) -> Server:
    port = free_port()
    token = os.urandom(16).hex()
    logf = open(workdir / "peer.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.peer_server", "--port", str(port), "--token", token],
        cwd=ROOT,
        stdout=logf,
        stderr=subprocess.STDOUT,
    )
    wait_http(f"http://127.0.0.1:{port}/v2/ServiceProviderConfig", proc)
    return Server(
        "scim2-server", "127.0.0.1", port, "/v2", token, proc.pid, stop_fn=lambda: stop_proc(proc)
    )


def start_scimgate(
    workdir: Path,
    database_url: str,
    name: str,
    extra_pids: list[int] | None = None,
    extra_yaml: str = "",
) -> Server:
    sys.path.insert(0, str(ROOT))
    from tests.fixtures.server import start_server

    # start_server's health poll uses httpx; server logs go to workdir/server.log.
    # Product defaults (log_level INFO: one JSON log line per request, as in production).
    srv = start_server(workdir, database_url, extra_yaml=extra_yaml)
    from urllib.parse import urlsplit

    u = urlsplit(srv.base_url)
    return Server(
        name,
        u.hostname or "127.0.0.1",
        int(u.port or 0),
        u.path,
        srv.token,
        srv.proc.pid,
        extra_pids=extra_pids or [],
        stop_fn=srv.stop,
    )


def start_up(
    workdir: Path,
    name: str,
    *,
    database_url: str | None = None,
    extra_pids: list[int] | None = None,
    timeout: float = 90,
) -> tuple[Server, dict[str, Any]]:
    """`scimgate up --dir DIR` exactly as a user runs it (the configuration it writes: one
    HAProxy target, read-your-writes, the SCIM TLS frontend, audit; SQLite in DIR, or
    ``database_url`` through SCIMGATE_DATABASE_URL as `up` reads it). Waits until stack.json
    names the process and /readyz says the target is in sync. Returns the server (the
    direct ``scim_url``, loopback HTTP) and stack.json."""
    from urllib.parse import urlsplit

    directory = workdir / "up"
    env = dict(os.environ)
    env.pop("SCIMGATE_DATABASE_URL", None)
    if database_url is not None:
        env["SCIMGATE_DATABASE_URL"] = database_url
    logf = open(workdir / "up.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "scimgate.cli", "up", "--dir", str(directory),
         "--port", str(free_port()), "--haproxy-port", str(free_port()),
         "--scim-tls-port", str(free_port())],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
    )  # fmt: skip
    logf.close()
    deadline = time.monotonic() + timeout
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(
                f"scimgate up exited {proc.returncode}: "
                f"{(workdir / 'up.log').read_text(errors='replace')[-2000:]}"
            )
        try:
            info = json.loads((directory / "stack.json").read_text())
            if info.get("pids", {}).get("scimgate") == proc.pid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    else:
        stop_proc(proc)
        raise HarnessError(f"scimgate up wrote no stack.json in {timeout} s")
    u = urlsplit(info["scim_url"])
    ready = f"http://{u.hostname}:{u.port}/readyz"
    wait_http(ready, proc, max(5.0, deadline - time.monotonic()), ok_only=True)
    srv = Server(
        name, u.hostname or "127.0.0.1", int(u.port or 0), u.path, info["token"], proc.pid,
        extra_pids=extra_pids or [], stop_fn=lambda: stop_proc(proc, 30), deployed=True,
        haproxy_pid=info["pids"].get("haproxy"),
    )  # fmt: skip
    return srv, info


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def start_postgres() -> Any:
    """The test suite's throwaway PostgreSQL (tests/fixtures/pg.py), unix socket only."""
    from tests.fixtures.pg import PostgresServer

    pg = PostgresServer()
    pg.start()
    return pg


def stop_postgres(pg: Any) -> None:
    """Fast shutdown by signalling the postmaster itself (the runuser wrapper that
    PostgresServer.stop signals does not always pass SIGINT on), then the fixture's cleanup."""
    if pg.proc is not None and pg.proc.poll() is None:
        for p in process_tree(pg.proc.pid):
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"/postgres") and b"-D" in cmd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGINT)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and Path(f"/proc/{p}").exists():
                    try:
                        if Path(f"/proc/{p}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                            break
                    except OSError:
                        break
                    time.sleep(0.05)
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            pg.proc.wait(5)
    pg.stop()


def start_serve(directory: Path, settings: Any, name: str, timeout: float = 300) -> Server:
    """`scimgate serve --dir DIR` on a Settings object we wrote (policy, targets, ...),
    with a fresh token; waits for /healthz (the sync engine's startup resync may still run)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scimgate.yaml").write_text(settings.to_yaml())
    cmd = [sys.executable, "-m", "scimgate.cli"]
    token = subprocess.run(
        [*cmd, "token", "create", f"bench-{time.monotonic_ns()}", "--dir", str(directory)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    logf = open(directory / "server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [*cmd, "serve", "--dir", str(directory)], stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT
    )
    wait_http(f"http://127.0.0.1:{settings.port}/healthz", proc, timeout)
    return Server(
        name,
        "127.0.0.1",
        settings.port,
        "/scim/v2",
        token,
        proc.pid,
        stop_fn=lambda: stop_proc(proc),
    )
