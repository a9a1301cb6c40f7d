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
- On a reload the master closes every master CLI connection, then re-executes itself, and
  only the re-executed master reads the configuration and the map files (strace of 2.6.12:
  ``close`` of the CLI connection, ``execve``, then ``openat`` of the map file; no idle
  timeout closed a prompt connection in 25 s). A unix socket's peer sees that close as
  EOF as soon as ``close`` returns. So a unix-socket connection to the master that shows no
  EOF at moment T proves that no reload began before T: :class:`MasterLink`.
"""

from __future__ import annotations

import enum
import re
import select
import socket
from dataclasses import dataclass

from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.errors import (
    HAProxyRuntimeError,
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


_PROMPT_TAIL = b"> "


class MasterLink:
    """One persistent prompt connection to the master CLI, kept open to learn of reloads
    without asking (module docstring): :meth:`intact` is one non-blocking peek, no round
    trip. Only a unix socket vouches for that (``vouches``): over TCP the close reaches us
    through the network stack, a moment later than the master's ``execve``.

    Not thread-safe: one owner (a follower thread)."""

    def __init__(self, address: RuntimeAddress, timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self.procs: MasterProcs | None = None  # ``show proc`` when the link was (re)opened
        self.opened = 0  # connections made (tests: what HAProxy's master saw)

    @property
    def vouches(self) -> bool:
        return self.address.family == "unix"

    def open(self) -> MasterProcs:
        """(Re)connect, enter prompt mode and read ``show proc`` on the new connection: a
        reload from now on closes it."""
        self.close()
        sock = self.address.connect(self.timeout)
        self._sock = sock
        self.opened += 1
        try:
            self._command(b"prompt\n")
            procs = parse_show_proc(self._command(b"show proc\n"))
        except BaseException:
            self.close()
            raise
        self.procs = procs
        return procs

    def intact(self) -> bool:
        """True while the connection is open with nothing unread: no reload since it was
        opened (for a unix socket). False after EOF, stray bytes or an error."""
        sock = self._sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def show_proc(self) -> MasterProcs:
        """``show proc`` on this connection (raises if it is gone: the caller reopens)."""
        if not self.intact():
            raise RuntimeConnectionLost(f"master CLI {self.address}: link closed")
        try:
            self.procs = parse_show_proc(self._command(b"show proc\n"))
        except BaseException:
            self.close()
            raise
        return self.procs

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _command(self, line: bytes) -> str:
        """Send one command line and read its reply up to the next prompt (``master> ``)."""
        sock = self._sock
        assert sock is not None
        buf = bytearray()
        try:
            sock.settimeout(self.timeout)
            sock.sendall(line)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeConnectionLost(f"master CLI {self.address} closed the link")
                buf.extend(chunk)
                last = buf[buf.rfind(b"\n") + 1 :]
                if last.endswith(_PROMPT_TAIL) and last.startswith(b"master"):
                    return bytes(buf[: len(buf) - len(last)]).decode("utf-8", "replace")
        except HAProxyRuntimeError:
            raise
        except OSError as exc:
            raise RuntimeConnectionLost(f"master CLI {self.address}: {exc}") from exc


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
