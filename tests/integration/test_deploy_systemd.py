"""deploy/systemd/scimgate.service (issue 15): systemd itself accepts the unit (with the
ExecStart path pointed at this checkout's scimgate), and it keeps its hardening."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "scimgate.service"


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_runs_serve_unprivileged_and_hardened() -> None:
    unit = settings(UNIT.read_text())
    assert unit["ExecStart"] == ["/opt/scimgate/bin/scimgate serve --dir /etc/scimgate"]
    assert unit["ExecStartPre"] == ["/opt/scimgate/bin/scimgate db upgrade --dir /etc/scimgate"]
    assert unit["User"] == ["scimgate"] and unit["Group"] == ["scimgate"]
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "CapabilityBoundingSet": "", "UMask": "0007",
    }.items():  # fmt: skip
        assert unit[key] == [value], key
    assert unit["ReadWritePaths"] == ["/etc/scimgate"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    scimgate = Path(sys.executable).parent / "scimgate"
    assert scimgate.exists()
    unit = tmp_path / "scimgate.service"
    unit.write_text(UNIT.read_text().replace("/opt/scimgate/bin/scimgate", str(scimgate)))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        # a machine without systemd as PID 1 (containers) notes that, about no unit of ours
        if "scimgate.service" in line
    ]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr
