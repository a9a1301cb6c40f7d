"""`scimgate up --dir DIR` as a real process: files, stack.json, rerun, shutdown, no leaks.

Every process is started on free loopback ports and stopped by its PID (``tests.support.up``).
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from scimgate.haproxy.process import check_config
from tests.support.net import free_port
from tests.support.scim import GROUP_SCHEMA, create_user
from tests.support.up import UpStack, haproxy_pids_for, launch, pid_alive, start_up

pytestmark = pytest.mark.haproxy

REQUIRED_KEYS = {
    "scim_url", "scim_public_url", "scim_ca_file", "token", "pids", "haproxy_url",
    "runtime_api", "master_api", "jwt_private_key", "policy_file",
}  # fmt: skip


@pytest.fixture
def up_dir(tmp_path: Path) -> Path:
    return tmp_path / "inst"


# ---------------------------------------------------------------------------------------------


def test_up_writes_stack_json_files_and_config(up_dir: Path) -> None:
    up = start_up(up_dir)
    try:
        info = up.info
        assert set(info) >= REQUIRED_KEYS
        assert info["pids"]["haproxy"] > 0 and pid_alive(info["pids"]["haproxy"])
        assert info["runtime_api"] == f"unix:{up_dir.resolve()}/haproxy/admin.sock"
        assert info["master_api"] == f"unix:{up_dir.resolve()}/haproxy/master.sock"

        # demo key pair: private 0600, public a PUBLIC KEY PEM
        key = Path(info["jwt_private_key"])
        assert key == up_dir.resolve() / "keys" / "jwt.key.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        pub = (up_dir / "keys" / "jwt.pub.pem").read_text()
        assert pub.startswith("-----BEGIN PUBLIC KEY-----")
        assert stat.S_IMODE((up_dir / "hmac.key").stat().st_mode) == 0o600

        # demo policy and rendered config
        policy = yaml.safe_load(Path(info["policy_file"]).read_text())
        assert policy["groups"] == {
            "admins": {"idp_groups": ["Admins"]},
            "engineering": {"idp_groups": ["Engineering"]},
            "automation": {"idp_groups": ["Automation"]},  # issue 13: agents on /api
        }
        assert policy["identity"]["jwt"]["algorithm"] == "RS256"
        assert policy["identity"]["jwt"]["claim"] == "email"
        cfg = up_dir / "haproxy" / "haproxy.cfg"
        assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
        ok, output = check_config(cfg)
        assert ok, output

        # instance config: one target `local`, shards decided and persisted, RYW on
        conf = yaml.safe_load((up_dir / "scimgate.yaml").read_text())
        assert conf["read_your_writes"] is True
        assert conf["map_shards"] in (1, 16)
        assert [t["name"] for t in conf["targets"]] == ["local"]
        target = conf["targets"][0]
        assert target["runtime_api"] == info["runtime_api"]
        assert target["master_api"] == info["master_api"]
        assert target["map_dir"] == str(up_dir.resolve() / "haproxy" / "maps")
        assert Path(conf["policy_file"]).name == "policy.yaml"

        # both services answer
        assert httpx.get(info["scim_url"].rsplit("/scim", 1)[0] + "/healthz").status_code == 200
        assert httpx.get(info["haproxy_url"] + "/").status_code == 401  # no token
    finally:
        rc = up.stop()
    assert rc == 0, up.log[-3000:]


def test_sigterm_stops_haproxy_and_removes_stack_json(up_dir: Path) -> None:
    up = start_up(up_dir)
    haproxy_pid = up.info["pids"]["haproxy"]
    assert pid_alive(haproxy_pid)
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(30) == 0, up.log[-3000:]
    deadline = time.monotonic() + 5
    while pid_alive(haproxy_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(haproxy_pid)
    assert haproxy_pids_for(up_dir) == []
    assert not (up_dir / "stack.json").exists()


def test_sigint_stops_haproxy_too(up_dir: Path) -> None:
    up = start_up(up_dir)
    haproxy_pid = up.info["pids"]["haproxy"]
    up.proc.send_signal(signal.SIGINT)
    up.proc.wait(30)
    time.sleep(0.2)
    assert not pid_alive(haproxy_pid)
    assert not (up_dir / "stack.json").exists()


def test_rerun_reuses_database_token_keys_and_loads_maps(up_dir: Path) -> None:
    up = start_up(up_dir)
    try:
        with up.scim() as scim:
            create_user(scim, "rerun@example.com")
        token = up.info["token"]
        private_key = (up_dir / "keys" / "jwt.key.pem").read_bytes()
        secret = (up_dir / "hmac.key").read_bytes()
    finally:
        assert up.stop() == 0

    up2 = start_up(up_dir)
    try:
        assert up2.info["token"] == token
        assert (up_dir / "keys" / "jwt.key.pem").read_bytes() == private_key
        assert (up_dir / "hmac.key").read_bytes() == secret
        with up2.scim() as scim:
            r = scim.get("/Users", params={"filter": 'userName eq "rerun@example.com"'})
            assert r.status_code == 200, r.text
            assert r.json()["totalResults"] == 1
        # the user from run 1 is enforced by the new HAProxy from its first request
        jwt = up2.mint_cli("rerun@example.com")
        with up2.browser() as web:
            assert web.get("/", headers={"Authorization": f"Bearer {jwt}"}).status_code == 200
            assert web.get("/admin", headers={"Authorization": f"Bearer {jwt}"}).status_code == 403
    finally:
        assert up2.stop() == 0


def test_crash_at_startup_leaves_no_haproxy(up_dir: Path) -> None:
    """The SCIM port is taken: uvicorn cannot bind, `up` fails, HAProxy is stopped."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        up_dir.mkdir(parents=True)
        log = open(up_dir / "up.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "scimgate.cli", "up", "--dir", str(up_dir),
             "--port", str(port), "--haproxy-port", str(free_port()),
             "--scim-tls-port", str(free_port())],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        up = UpStack(up_dir, proc)
        try:
            rc = proc.wait(60)
        finally:
            leaked = haproxy_pids_for(up_dir)
            up.stop()
    assert rc != 0
    assert (up_dir / "haproxy" / "haproxy.cfg").exists()  # HAProxy was started first
    assert leaked == []
    assert not (up_dir / "stack.json").exists()


def test_invalid_policy_fails_with_line_numbers_and_no_haproxy(up_dir: Path) -> None:
    up_dir.mkdir(parents=True)
    (up_dir / "policy.yaml").write_text(
        "identity:\n  source: jwt\n  jwt: {algorithm: none}\nroutes: []\n"
    )
    up = launch(up_dir)
    rc = up.proc.wait(60)
    up.stop()
    assert rc == 1
    assert f"{up_dir.resolve()}/policy.yaml:3:" in up.log
    assert "Traceback" not in up.log
    assert haproxy_pids_for(up_dir) == []


@pytest.fixture
def leftover(up_dir: Path) -> Iterator[None]:
    yield
    for pid in haproxy_pids_for(up_dir):
        os.kill(pid, signal.SIGKILL)


def test_haproxy_left_by_a_killed_run_is_replaced(up_dir: Path, leftover: None) -> None:
    up = start_up(up_dir)
    old_haproxy = up.info["pids"]["haproxy"]
    up.proc.kill()  # SIGKILL: no cleanup at all; HAProxy (own session) survives
    up.proc.wait()
    assert pid_alive(old_haproxy)
    up2 = start_up(up_dir)
    try:
        assert not pid_alive(old_haproxy)
        assert up2.info["pids"]["haproxy"] != old_haproxy
        assert haproxy_pids_for(up_dir) != []
    finally:
        assert up2.stop() == 0
    assert haproxy_pids_for(up_dir) == []


def test_rerun_applies_an_edited_policy(up_dir: Path) -> None:
    up = start_up(up_dir)
    try:
        with up.scim() as scim:
            user_id = create_user(scim, "pat@example.com")
            r = scim.post("/Groups", json={
                "schemas": [GROUP_SCHEMA], "displayName": "Engineering",
                "members": [{"value": user_id}],
            })  # fmt: skip
            assert r.status_code == 201, r.text
        token = up.mint("pat@example.com")
        with up.browser() as web:
            assert web.get("/eng", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        assert up.stop() == 0

    policy = up_dir / "policy.yaml"
    policy.write_text(policy.read_text().replace('idp_groups: ["Engineering"]',
                                                 'idp_groups: ["Platform"]'))  # fmt: skip
    up2 = start_up(up_dir)
    try:
        assert "Platform" in (up_dir / "policy.yaml").read_text()  # kept, not overwritten
        with up2.browser() as web:
            auth = {"Authorization": f"Bearer {token}"}
            assert web.get("/eng", headers=auth).status_code == 403
            assert web.get("/", headers=auth).status_code == 200
    finally:
        assert up2.stop() == 0
