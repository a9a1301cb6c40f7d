"""A bash session that runs a document's commands one at a time, in order, in its own
process group, and returns each command's output (stdout and stderr as a terminal shows
them). Stopped by its process group id, and any `scimgate up` it started by stack.json."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.up import haproxy_pids_for, pid_alive

_JOB_NOTICE = re.compile(r"^bash: line \d+: +\d+ (?:Killed|Terminated)\s.*\n?", re.MULTILINE)


class DocShell:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self._sentinel = "__doccheck_" + secrets.token_hex(8)
        self._proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=workdir, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def run(self, command: str, timeout: float = 60) -> tuple[str, int]:
        """Run one command; its output and exit status."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        # the command on its own lines: a trailing comment cannot swallow the sentinel
        script = f"{command}\n__rc=$?; printf '\\n%s %d\\n' {self._sentinel} $__rc\n"
        self._proc.stdin.write(script.encode())
        self._proc.stdin.flush()
        fd = self._proc.stdout.fileno()
        buffer = b""
        marker = ("\n" + self._sentinel + " ").encode()
        deadline = time.monotonic() + timeout
        while marker not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self._proc.poll() is not None:
                raise AssertionError(
                    f"command did not finish in {timeout} s: {command}\n{buffer!r}"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"shell ended during: {command}\n{buffer!r}")
                buffer += chunk
        head, _, tail = buffer.partition(marker)
        while not tail.endswith(b"\n"):
            tail += os.read(fd, 64)
        # bash's notice about a background job (the page's `up … &`) that a signal ended:
        # the shell's, not the command's output (an interactive shell prints `[1]+ Killed`)
        output = _JOB_NOTICE.sub("", head.decode(errors="replace"))
        return output, int(tail.split()[0])

    def close(self) -> None:
        for stack in self.workdir.rglob("stack.json"):
            try:
                pid = int(json.loads(stack.read_text())["pids"]["scimgate"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 20
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
        for cfg in self.workdir.rglob("haproxy.cfg"):
            for pid in haproxy_pids_for(cfg.parent.parent):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(10)


def shell_env(bin_dir: Path, home: Path) -> dict[str, str]:
    """The environment a newcomer has after `make venv`: the venv's `scimgate` on PATH."""
    return {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",  # stdout and stderr interleave as on a terminal
        "TERM": "dumb",
        "COLUMNS": "200",
    }


def venv_bin() -> Path:
    return Path(sys.executable).parent
