"""The restore drill of docs/production.md (issue 15), on a real HAProxy run by the operator
and a real `scimgate serve`: back up the SQLite database, make more changes, stop, restore
the older file, start again. HAProxy must end up enforcing the restored state (a user created
after the backup denied again, one deactivated after it allowed again), and the audit trail
must say what happened (a `db.restore` event naming the replaced head) and still verify."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from scimgate.cli import main
from scimgate.instance.local_haproxy import prepare_haproxy
from scimgate.instance.up import ensure_config
from tests.support.haproxy import launch, started
from tests.support.net import free_port
from tests.support.scim import create_user, set_active


def scimgate(*args: str) -> subprocess.CompletedProcess[str]:
    """The scimgate command in-process (serve alone runs as its own process)."""
    result = CliRunner().invoke(main, list(args), env={"SCIMGATE_DIR": None})
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


pytestmark = pytest.mark.haproxy


class Serve:
    """`scimgate serve --dir DIR` as a systemd unit would run it; stopped by its PID."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.log = open(directory / "serve.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scimgate.cli", "serve", "--dir", str(directory)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )

    def wait_ready(self, timeout: float = 40) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.directory / "serve.log").read_text()[-3000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                if r.status_code == 200:
                    return dict(r.json())
                last = r.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise AssertionError(f"not ready after {timeout}s: {last}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def scim_client(port: int, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}/scim/v2",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        timeout=15,
    )


def test_restore_an_older_database_resyncs_haproxy_and_is_audited(tmp_path: Path) -> None:
    d = tmp_path / "inst"
    port, web = free_port(), free_port()
    settings = ensure_config(d, port)
    prepare_haproxy(settings, haproxy_port=web)
    # `up` keeps the port of a run to itself; `serve` reads it from the config
    data = yaml.safe_load((d / "scimgate.yaml").read_text())
    (d / "scimgate.yaml").write_text(yaml.safe_dump({**data, "port": port}, sort_keys=False))
    token = scimgate("token", "create", "idp", "--dir", str(d)).stdout.strip()
    assert token.startswith("sgt_")

    jwts: dict[str, str] = {}

    def jwt(email: str) -> str:
        if email not in jwts:
            jwts[email] = scimgate("jwt", "mint", "--dir", str(d), email).stdout.strip()
        return jwts[email]

    web_client = httpx.Client(base_url=f"http://127.0.0.1:{web}", timeout=5)

    def status(email: str) -> int:
        return web_client.get("/", headers={"Authorization": f"Bearer {jwt(email)}"}).status_code

    haproxy = launch(
        d / "haproxy" / "haproxy.cfg",
        ports=[web],
        master_socket=d / "haproxy" / "master.sock",
        stats_socket=d / "haproxy" / "admin.sock",
        start=False,
    )
    with started(haproxy):
        serve = Serve(d, port)
        try:
            serve.wait_ready()
            with scim_client(port, token) as scim:
                alice = create_user(scim, "alice@example.com")
            assert status("alice@example.com") == 200

            backup = tmp_path / "backup.db"
            out = scimgate("db", "backup", "--dir", str(d), str(backup))
            assert out.returncode == 0, out.stderr
            backed_up_head = out.stdout.split("audit head ")[1].strip()

            with scim_client(port, token) as scim:  # changes after the backup
                create_user(scim, "bob@example.com")
                assert set_active(scim, alice, False).status_code == 200
            assert status("bob@example.com") == 200
            assert status("alice@example.com") == 403
            before = scimgate("audit", "verify", "--dir", str(d)).stdout
            replaced_seq = int(before.split(" events")[0].rsplit(" ", 1)[1])

            refused = scimgate("db", "restore", "--dir", str(d), str(backup))
            assert refused.returncode == 1 and "stop it first" in refused.stderr
        finally:
            serve.stop()

        out = scimgate("db", "restore", "--dir", str(d), str(backup))
        assert out.returncode == 0, out.stderr
        print(out.stdout)
        kept = list(d.glob("scimgate.db.replaced-*"))
        assert len(kept) == 1

        serve = Serve(d, port)
        try:
            serve.wait_ready()  # ready = every target resynced from the restored state
            assert status("alice@example.com") == 200  # deactivated after the backup
            assert status("bob@example.com") == 403  # created after the backup
        finally:
            serve.stop()

    verify = scimgate("audit", "verify", "--dir", str(d))
    assert verify.returncode == 0, verify.stderr
    events = [
        json.loads(line)
        for line in scimgate("audit", "export", "--dir", str(d)).stdout.splitlines()
    ]
    (restore,) = [e for e in events if e["kind"] == "db.restore"]
    seq, digest = backed_up_head.split(":")
    assert restore["detail"]["restored_head"] == {"seq": int(seq), "hash": digest}
    assert restore["detail"]["replaced_head"]["seq"] == replaced_seq
    assert restore["detail"]["discarded_events"] == replaced_seq - int(seq)
    assert restore["detail"]["replaced_file"] == str(kept[0])
    assert restore["seq"] == int(seq) + 1  # the chain continues from the restored head
    resyncs = [e for e in events if e["kind"] == "sync.resync" and e["seq"] > restore["seq"]]
    assert resyncs, "no resync recorded after the restore"
    # the replaced database is kept whole: its own chain still verifies
    old = scimgate("audit", "verify", "--config", str(_config_for(d, kept[0], tmp_path)))
    assert old.returncode == 0 and f"audit chain OK: {replaced_seq} events" in old.stdout


def _config_for(d: Path, database: Path, tmp_path: Path) -> Path:
    config = tmp_path / "replaced" / "scimgate.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump({"database_url": f"sqlite:///{database}"}))
    return config
