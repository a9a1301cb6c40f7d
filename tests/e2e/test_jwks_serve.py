"""The issuer's JWKS followed by `scimgate serve` for HAProxy processes the user runs.

As an operator does: `scimgate init`, a JWKS policy, `scimgate jwt keys --refresh`, then
`scimgate haproxy render --target ... -o FILE` for two targets and a real HAProxy started
from each file (by this test, not by `up`), then `scimgate serve`. Target ``edge`` declares
``config_file`` (and has ``master_api``): on a key change `serve` renders its file again,
checks it and reloads it through the master CLI. Target ``edge2`` does not: its HAProxy
keeps its keys until the operator renders and reloads; `status` says so, the audit event
says ``manual``. Runs on each HAProxy version of the suite.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from scimgate.instance.haproxy_config import write_map_files
from tests.support.haproxy import launch, started
from tests.support.jwks_issuer import JwksIssuer
from tests.support.net import free_port
from tests.support.scim import create_user
from tests.support.up import scimgate
from tests.support.versions import HAProxyBinary

pytestmark = pytest.mark.haproxy

USER = "serve-jwks@example.com"


def policy(issuer: str) -> str:
    return f"""\
identity:
  source: jwt
  jwt:
    issuer: {issuer}
    audience: scimgate-test
    claim: email
    jwks: {{min_refresh_seconds: 600, max_refresh_seconds: 600, unknown_kid_refresh_seconds: 1}}
  key_attributes: [userName]
routes:
  - name: home
    from: {{path_prefix: /}}
    allow_groups: [any]
    to: {{return: "hello"}}
"""


def status_of(url: str, token: str) -> int:
    try:
        r = httpx.get(url + "/", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    except httpx.HTTPError:
        return 0
    return r.status_code


def wait_for(predicate: object, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:  # bounded
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture
def idp() -> Iterator[JwksIssuer]:
    with JwksIssuer(max_age=600) as issuer:
        issuer.add_key("k1")
        yield issuer


def test_serve_reloads_declared_targets_and_flags_the_others(
    tmp_path: Path, idp: JwksIssuer, haproxy_version: HAProxyBinary
) -> None:
    env = {**os.environ, "SCIMGATE_HAPROXY": haproxy_version.path}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return scimgate(*args, env=env)

    d = tmp_path / "inst"
    port, web, web2 = free_port(), free_port(), free_port()
    out = cli("init", "--dir", str(d), "--port", str(port), "--bind", f"127.0.0.1:{web}")
    assert out.returncode == 0, out.stderr
    (d / "policy.yaml").write_text(policy(idp.issuer))
    settings = yaml.safe_load((d / "scimgate.yaml").read_text())
    settings.pop("scim_front", None)  # not needed here
    edge = settings["targets"][0]
    edge["config_file"] = str(d / "haproxy.cfg")
    edge2_dir = d / "edge2"
    write_map_files(edge2_dir / "maps", {}, settings["map_shards"])
    settings["targets"].append(
        {
            "name": "edge2",
            "runtime_api": f"unix:{edge2_dir / 'admin.sock'}",
            "master_api": f"unix:{edge2_dir / 'master.sock'}",
            "map_dir": str(edge2_dir / "maps"),
            "bind": f"127.0.0.1:{web2}",
        }
    )
    (d / "scimgate.yaml").write_text(yaml.safe_dump(settings))

    assert cli("db", "upgrade", "--dir", str(d)).returncode == 0
    token = cli("token", "create", "okta", "--dir", str(d)).stdout.strip()
    out = cli("jwt", "keys", "--dir", str(d), "--refresh")
    assert out.returncode == 0 and "k1 " in out.stdout, out.stdout + out.stderr
    cfg, cfg2 = d / "haproxy.cfg", edge2_dir / "haproxy.cfg"
    for name, path in (("edge", cfg), ("edge2", cfg2)):
        out = cli("haproxy", "render", "--dir", str(d), "--target", name, "-o", str(path))
        assert out.returncode == 0, out.stderr

    h1 = launch(
        cfg, ports=[web], binary=haproxy_version.path, master_socket=d / "haproxy" / "master.sock",
        stats_socket=d / "haproxy" / "admin.sock", start=False,
    )  # fmt: skip
    h2 = launch(
        cfg2, ports=[web2], binary=haproxy_version.path, master_socket=edge2_dir / "master.sock",
        stats_socket=edge2_dir / "admin.sock", start=False,
    )  # fmt: skip
    with started(h1), started(h2):
        log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115
        serve = subprocess.Popen(
            [sys.executable, "-m", "scimgate.cli", "serve", "--dir", str(d)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:

            def ready() -> bool:
                if serve.poll() is not None:
                    pytest.fail((tmp_path / "serve.log").read_text()[-3000:])
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                except httpx.HTTPError:
                    return False
                last[0] = r.text
                return r.status_code == 200

            last = [""]
            try:
                wait_for(ready, 30, "serve ready")
            except AssertionError:
                pytest.fail(f"/readyz: {last[0]}")
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}/scim/v2",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ) as scim:
                create_user(scim, USER)
            a, b = f"http://127.0.0.1:{web}", f"http://127.0.0.1:{web2}"
            k1 = idp.mint("k1", USER)
            wait_for(lambda: status_of(a, k1) == 200 and status_of(b, k1) == 200, 10, "k1 on both")
            reloads = h1.master_procs().reloads

            # the IdP signs with a key it has just published
            idp.add_key("k2", "ec256")
            k2 = idp.mint("k2", USER)
            assert status_of(a, k2) == 401
            took = wait_for(lambda: status_of(a, k2) == 200, 15, "k2 accepted by edge")
            print(f"serve: edge reloaded with k2 {took:.2f} s after its first 401")
            assert h1.master_procs().reloads == reloads + 1
            assert "-m str -- k2 }" in cfg.read_text()  # the file now selects k2's key
            assert "-m str -- k2 }" not in cfg2.read_text()
            assert stat.S_IMODE(cfg.stat().st_mode) == 0o600  # it holds the pseudonym secret
            assert status_of(a, k1) == 200
            # edge2 keeps the config it was started with: k2 refused until a reload by hand
            assert status_of(b, k2) == 401 and status_of(b, k1) == 200
            assert h2.master_procs().reloads == 0
            out = cli("status", "--dir", str(d))
            assert "reload needed: target edge2" in out.stdout, out.stdout + out.stderr
            assert "target edge " not in out.stdout
            with sqlite3.connect(d / "scimgate.db") as conn:
                rows = conn.execute(
                    "SELECT operation, detail FROM audit_events WHERE kind = 'jwt.keys'"
                ).fetchall()
            rotations = [json.loads(detail) for op, detail in rows if op == "rotate"]
            assert any(
                [k["kid"] for k in r["added"]] == ["k2"]
                and r["reload"] == {"edge": "master_cli", "edge2": "manual"}
                for r in rotations
            ), rows
            assert (
                "target edge2 has no master_api and config_file"
                in (tmp_path / "serve.log").read_text()
            )

            # the operator renders edge2's config and reloads it
            out = cli("haproxy", "render", "--dir", str(d), "--target", "edge2", "-o", str(cfg2))
            assert out.returncode == 0 and "reload HAProxy (target edge2)" in out.stderr, out.stderr
            h2.reload()
            wait_for(lambda: status_of(b, k2) == 200, 15, "k2 accepted by edge2 after its reload")
            assert "reload needed" not in cli("status", "--dir", str(d)).stdout
        except BaseException:
            # shown with the failure: what serve did (reloads, warnings, fetch errors)
            print((tmp_path / "serve.log").read_text()[-6000:])
            print(h1.output()[-2000:], h2.output()[-2000:])
            raise
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
            log.close()
