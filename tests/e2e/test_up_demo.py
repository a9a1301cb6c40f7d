"""`make demo` (python -m scimgate.instance.demo_session): its self-check passes, the curl session it
prints works when pasted into bash, and Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.up import haproxy_pids_for, pid_alive

pytestmark = pytest.mark.haproxy


def test_demo_session_prints_a_working_curl_session(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scimgate.instance.demo_session", "--dir", "demo",
         "--port", str(free_port()), "--haproxy-port", str(free_port()),
         "--scim-tls-port", str(free_port())],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout or []:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    output: list[str] = []
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 120
        while not any(line.startswith("Running.") for line in output):
            assert time.monotonic() < deadline, "".join(output)
            assert proc.poll() is None or not lines.empty(), "".join(output)
            try:
                output.append(lines.get(timeout=0.5))
            except queue.Empty:
                continue
        text = "".join(output)
        assert "FAIL" not in text, text
        # 6 steps for a person, 4 for an agent and its owner (issue 13)
        assert text.count(" ok ") == 10, text
        assert re.search(
            r"admin console: http://127\.0\.0\.1:\d+/console/ +name demo-admin +password sga_", text
        ), text
        session = text.split("copy-paste):\n", 1)[1].split("Running.", 1)[0]
        assert "scimgate jwt mint --dir demo alice@example.com" in session

        result = subprocess.run(
            ["bash", "-c", session], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        statuses = re.findall(r"^(/\S*) -> (\d{3})$", result.stdout, re.M)
        assert statuses == [
            ("/", "200"),
            ("/admin", "403"),
            ("/admin", "200"),
            ("/admin", "403"),
            ("/", "403"),
            ("/api", "200"),  # issue 13: an agent in Automation
            ("/eng", "403"),
            ("/api", "403"),  # its owner deactivated
        ], result.stdout + result.stderr

        pids = json.loads((tmp_path / "demo" / "stack.json").read_text())["pids"]
        haproxy_pid = pids["haproxy"]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        assert not pid_alive(haproxy_pid)
        assert not (tmp_path / "demo" / "stack.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stack_file = tmp_path / "demo" / "stack.json"
        if not pids and stack_file.exists():
            pids = json.loads(stack_file.read_text())["pids"]
        if pids.get("scimgate") and pid_alive(pids["scimgate"]):
            os.kill(pids["scimgate"], signal.SIGKILL)
        for pid in haproxy_pids_for(tmp_path / "demo"):
            os.kill(pid, signal.SIGKILL)
