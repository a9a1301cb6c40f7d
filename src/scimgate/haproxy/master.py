"""The master CLI (``haproxy -W -S <socket>``): ``show proc`` parsing, commands to one worker
(``@!<pid>``), and telling a reload from a restart.

Facts this relies on (HAProxy 2.6.12, measured in tests/integration/test_haproxy_runtime.py
and the reload tests of tests/integration/test_sync_engine.py):

- ``show proc`` lists the master with its reload counter (``[failed: N]`` after a failed
  reload), the current workers and, after a reload, the old workers that still serve their
  open connections with the maps they had.
- A reload keeps the master's PID, bumps its reload counter and starts new workers that load
  the map files (runtime changes are lost). A restart changes every PID.
- A Runtime API connection opened before a reload still reaches the old worker; a fresh one
  reaches a new worker. So comparing the worker a fresh connection reaches with the worker we
  last resynced catches both; the reload counter says which it was.
- The 2.6 master CLI keeps a non-interactive connection open after the reply: a command is
  followed by ``;quit`` on the same line (a second line might not be read). ``reload``
  closes the connection without a reply.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.errors import (
    RuntimeCommandError,
    RuntimeConnectionLost,
    UnsafeRuntimeArgument,
)
from scimgate.haproxy.words import check_raw_command


@dataclass(frozen=True)
class MasterProcess:
    pid: int
    kind: str
    reloads: int
    uptime: str
    version: str


@dataclass(frozen=True)
class MasterProcs:
    """Master CLI ``show proc``: the reload counter and worker PIDs reveal reloads/restarts."""

    master: MasterProcess
    failed_reloads: int
    workers: list[MasterProcess]
    old_workers: list[MasterProcess]

    @property
    def reloads(self) -> int:
        return self.master.reloads

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers]


_PROC_LINE = re.compile(
    r"^(?P<pid>\d+)\s+(?P<kind>\S+)\s+(?P<reloads>\d+)"
    r"(?:\s+\[failed:\s*(?P<failed>\d+)\])?\s+(?P<uptime>\S+)(?:\s+(?P<version>\S+))?"
)


def parse_show_proc(text: str) -> MasterProcs:
    """``show proc``'s reply; raises :class:`RuntimeCommandError` without a master line."""
    master: MasterProcess | None = None
    failed = 0
    workers: list[MasterProcess] = []
    old: list[MasterProcess] = []
    section = "master"
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            label = stripped.lstrip("#").strip().lower()
            if label in ("workers", "old workers", "programs"):
                section = label
            continue
        m = _PROC_LINE.match(stripped)
        if not m:
            continue
        proc = MasterProcess(
            pid=int(m["pid"]),
            kind=m["kind"],
            reloads=int(m["reloads"]),
            uptime=m["uptime"],
            version=m["version"] or "",
        )
        if m["kind"] == "master":
            master, failed = proc, int(m["failed"] or 0)
        elif section == "workers":
            workers.append(proc)
        elif section == "old workers":
            old.append(proc)
    if master is None:
        raise RuntimeCommandError(
            "show proc", text, "master CLI 'show proc' reply has no master line"
        )
    return MasterProcs(master, failed, workers, old)


def master_command(address: RuntimeAddress, command: str, timeout: float = 5.0) -> str:
    """Send one command to the master CLI (non-interactive) and return the whole reply.

    ``reload`` closes the connection without a reply; that is returned as ``""``.
    """
    data = check_raw_command(command)[:-1] + b";quit\n"
    sock = address.connect(timeout)
    try:
        sock.sendall(data)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError as exc:
                raise RuntimeConnectionLost(
                    f"master CLI {address}: timeout on {command!r}"
                ) from exc
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise RuntimeConnectionLost(f"master CLI {address}: {exc}") from exc
    finally:
        sock.close()
    return b"".join(chunks).decode("utf-8", "replace")


def show_proc(address: RuntimeAddress, timeout: float = 2.0) -> MasterProcs:
    """``show proc`` on the master CLI at ``address``."""
    return parse_show_proc(master_command(address, "show proc", timeout))


class WorkerChange(enum.StrEnum):
    """Why the worker serving new requests is not the one whose maps we hold."""

    RELOAD = "reload"
    RESTART = "restart"


def worker_change(
    *,
    resynced_pid: int | None,
    fresh_pid: int,
    connected_pid: int | None,
    reloads_before: int | None,
    reloads_now: int | None,
) -> WorkerChange | None:
    """Whether HAProxy's worker changed since our last resync, and how (pure).

    ``resynced_pid``: the worker our last resync went to; ``fresh_pid``: the worker a new
    connection reaches now; ``connected_pid``: the worker our open connection reaches;
    ``reloads_before``/``reloads_now``: the master's reload counter then and now (None when
    there is no master CLI, or it did not answer). A higher reload counter is a reload even
    if the PIDs look the same (a reload between two probes whose new worker we have not met);
    a PID change without one is a restart."""
    if reloads_before is not None and reloads_now is not None and reloads_now > reloads_before:
        return WorkerChange.RELOAD
    if fresh_pid != resynced_pid or connected_pid != resynced_pid:
        return WorkerChange.RESTART
    return None


def worker_command(pid: int, command: str) -> str:
    """``@!<pid> <command>``: a command the master forwards to one (possibly old) worker."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise UnsafeRuntimeArgument("a worker pid is a positive int")
    return f"@!{pid} {command}"
