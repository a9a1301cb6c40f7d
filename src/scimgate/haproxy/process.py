"""Run a real HAProxy in master-worker mode: find it, check a config, start, reload, stop.

We run ``haproxy -W -db -S <master.sock> -f <cfg> -p <pidfile>`` as our own foreground
child: ``-W`` master-worker (reloads keep the master PID and expose ``show proc``),
``-db`` so the master stays our child (no daemonising, no lost PID), ``-S`` the master
CLI. Stopping is by that PID only: SIGTERM to the master, then SIGKILL to the master and
to the worker PIDs it reported, if they outlive the grace period.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.errors import HAProxyRuntimeError
from scimgate.haproxy.master import MasterProcs, master_command, parse_show_proc
from scimgate.haproxy.replies import parse_version
from scimgate.haproxy.runtime import RuntimeClient

_CANDIDATES = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy")


class HAProxyNotFound(FileNotFoundError):
    """No haproxy binary (install Debian's ``haproxy`` package, or set SCIMGATE_HAPROXY)."""


class HAProxyStartError(RuntimeError):
    """HAProxy exited or did not become ready; ``output`` holds its log."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(
            f"{message}\n--- haproxy output ---\n{output[-4000:]}" if output else message
        )
        self.output = output


class HAProxyReloadFailed(RuntimeError):
    """The master reported a failed reload (``[failed: N]`` went up) or none happened."""


def find_haproxy(explicit: str | os.PathLike[str] | None = None) -> str:
    """The haproxy binary: ``explicit``, $SCIMGATE_HAPROXY, $PATH, then the usual sbin dirs."""
    for candidate in (explicit, os.environ.get("SCIMGATE_HAPROXY")):
        if candidate:
            if os.access(candidate, os.X_OK):
                return str(candidate)
            raise HAProxyNotFound(f"haproxy binary {candidate!s} is not executable")
    found = shutil.which("haproxy")
    if found:
        return found
    for path in _CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise HAProxyNotFound(
        "haproxy not found on PATH or in /usr/sbin, /usr/local/sbin "
        "(apt-get install haproxy, or set SCIMGATE_HAPROXY)"
    )


def binary_version(binary: str | None = None) -> tuple[int, int, int]:
    """Version from ``haproxy -v`` (``HAProxy version 2.6.12-1+deb12u4 ...`` → (2, 6, 12))."""
    out = subprocess.run(
        [find_haproxy(binary), "-v"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    m = re.search(r"version (\S+)", out)
    if m is None:
        raise RuntimeError(f"unexpected 'haproxy -v' output: {out[:200]!r}")
    return parse_version(m.group(1))


def check_config(cfg_path: str | os.PathLike[str], binary: str | None = None) -> tuple[bool, str]:
    """``haproxy -c -f <cfg>``: (valid, combined output). Map files must already exist."""
    proc = subprocess.run(
        [find_haproxy(binary), "-c", "-f", os.fspath(cfg_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


class HAProxyProcess:
    """One master-worker HAProxy that we started and that we stop, by PID."""

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        master_socket: str | os.PathLike[str],
        *,
        binary: str | None = None,
        pid_file: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        stats_socket: RuntimeAddress | str | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.master_socket = Path(master_socket)
        self.binary = find_haproxy(binary)
        self.pid_file = Path(pid_file) if pid_file else self.config_path.with_suffix(".pid")
        self.log_path = Path(log_path) if log_path else self.config_path.with_suffix(".log")
        self.stats_address = (
            RuntimeAddress.parse(stats_socket) if isinstance(stats_socket, str) else stats_socket
        )
        self.master_address = RuntimeAddress("unix", path=str(self.master_socket))
        self._popen: subprocess.Popen[bytes] | None = None

    # ---- state

    @property
    def pid(self) -> int | None:
        """The master's PID (stable across reloads)."""
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def master_procs(self, timeout: float = 5.0) -> MasterProcs:
        return parse_show_proc(master_command(self.master_address, "show proc", timeout))

    def runtime_client(self, timeout: float = 5.0) -> RuntimeClient:
        if self.stats_address is None:
            raise ValueError("no stats socket given to HAProxyProcess")
        return RuntimeClient(self.stats_address, timeout, master=self.master_address)

    # ---- lifecycle

    def start(self, ready_timeout: float = 10.0) -> HAProxyProcess:
        if self.running:
            raise RuntimeError(f"haproxy already running (pid {self.pid})")
        with contextlib.suppress(FileNotFoundError):
            self.master_socket.unlink()
        cmd = [
            self.binary, "-W", "-db",
            "-S", f"{self.master_socket},mode,600",
            "-f", str(self.config_path),
            "-p", str(self.pid_file),
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # our signals only, not the terminal's
            )  # fmt: skip
        try:
            self.wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 10.0) -> MasterProcs:
        """Until the master lists a worker and (if known) the stats socket answers."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise HAProxyStartError("haproxy exited during startup", self.output())
            try:
                procs = self.master_procs(timeout=1.0)
                if procs.workers:
                    if self.stats_address is not None:
                        with RuntimeClient(self.stats_address, 1.0, cli_timeout=None) as c:
                            pid = int(c.show_info()["Pid"])
                        if pid not in procs.worker_pids:
                            raise HAProxyRuntimeError(f"stats socket answered from pid {pid}")
                    return procs
            except (HAProxyRuntimeError, OSError) as exc:
                last_error = exc
            time.sleep(0.02)
        raise HAProxyStartError(f"haproxy not ready after {timeout}s: {last_error}", self.output())

    def reload(self, timeout: float = 10.0) -> MasterProcs:
        """Hitless reload through the master CLI; waits for the new worker.

        Raises HAProxyReloadFailed if the master counts a failed reload. The previous
        workers stay alive while they hold connections (``hard-stop-after`` bounds them).
        """
        before = self.master_procs()
        master_command(self.master_address, "reload")  # master closes the CLI, no reply
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.02)
            try:
                procs = self.master_procs(timeout=1.0)
            except HAProxyRuntimeError:
                continue  # the master refuses connections while it re-executes
            if procs.failed_reloads > before.failed_reloads:
                raise HAProxyReloadFailed(
                    f"reload failed; haproxy output:\n{self.output()[-4000:]}"
                )
            if procs.reloads > before.reloads and any(
                w.pid not in before.worker_pids for w in procs.workers
            ):
                return procs
        raise HAProxyReloadFailed(f"no new worker within {timeout}s after reload")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the master (workers follow), SIGKILL anything of ours left after timeout."""
        popen = self._popen
        if popen is None:
            return
        workers: list[int] = []
        if popen.poll() is None:
            with contextlib.suppress(HAProxyRuntimeError, OSError):
                procs = self.master_procs(timeout=1.0)
                workers = procs.worker_pids + [w.pid for w in procs.old_workers]
            with contextlib.suppress(ProcessLookupError):
                os.kill(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(popen.pid, signal.SIGKILL)
                popen.wait(5)
        deadline = time.monotonic() + timeout
        for pid in workers:
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._popen = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def __enter__(self) -> HAProxyProcess:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
