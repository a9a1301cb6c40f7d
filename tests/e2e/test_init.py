"""`scimgate init` as a production operator uses it (issue 15): init a directory for an
HAProxy they run themselves, check the policy, render the config for the target, start a
real HAProxy from it, `serve`, and see a SCIM create (sent over the TLS front) enforced."""

from __future__ import annotations

import http.server
import os
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scimgate.instance.democert import demo_certificate
from tests.support.haproxy import launch, started
from tests.support.net import free_port
from tests.support.up import scimgate

pytestmark = pytest.mark.haproxy


class AppHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"the application\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def application() -> Iterator[int]:
    """The application HAProxy protects: answers 200 to anything that gets through."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AppHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_init_then_check_render_haproxy_serve_and_enforce(tmp_path: Path, application: int) -> None:
    d = tmp_path / "inst"
    certificate, ca = demo_certificate("127.0.0.1")
    (tmp_path / "scim.pem").write_text(certificate)
    (tmp_path / "ca.pem").write_text(ca)
    port, web, tls = free_port(), free_port(), free_port()

    out = scimgate(
        "init", "--dir", str(d), "--port", str(port), "--bind", f"127.0.0.1:{web}",
        "--scim-bind", f"127.0.0.1:{tls}", "--certificate", str(tmp_path / "scim.pem"),
        "--backend", f"127.0.0.1:{application}",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "next:" in out.stdout and f"scimgate serve --dir {d}" in out.stdout
    for secret in ("hmac.key", "scimgate.yaml", "keys/jwt.key.pem"):
        assert stat.S_IMODE((d / secret).stat().st_mode) == 0o600, secret
    config = (d / "scimgate.yaml").read_text()
    assert config.count("\n# ") > 5 and "trusted_proxies: []" in config  # commented
    assert not (d / "scimgate.db").exists()  # nothing started, no database touched
    again = scimgate("init", "--dir", str(d))
    assert again.returncode == 1 and "never overwrites" in again.stderr

    check = scimgate("policy", "check", "--dir", str(d))
    assert check.returncode == 0, check.stderr
    cfg = d / "haproxy.cfg"
    render = scimgate("haproxy", "render", "--dir", str(d), "--target", "edge", "-o", str(cfg))
    assert render.returncode == 0, render.stderr
    assert "haproxy -c: configuration is valid" in render.stderr
    assert "hard-stop-after 60000ms" in cfg.read_text()

    haproxy = launch(
        cfg,
        ports=[web],
        master_socket=d / "haproxy" / "master.sock",
        stats_socket=d / "haproxy" / "admin.sock",
        start=False,
    )
    with started(haproxy):
        assert scimgate("db", "upgrade", "--dir", str(d)).returncode == 0
        token = scimgate("token", "create", "okta", "--dir", str(d), "--expires-in", "90d")
        assert token.returncode == 0, token.stderr
        log = open(tmp_path / "serve.log", "ab")  # noqa: SIM115
        serve = subprocess.Popen(
            [sys.executable, "-m", "scimgate.cli", "serve", "--dir", str(d)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        try:
            _enforced(d, port, web, tls, token.stdout.strip(), tmp_path / "ca.pem")
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
            log.close()


def _enforced(d: Path, port: int, web: int, tls: int, token: str, ca: Path) -> None:
    deadline = time.monotonic() + 30
    ready = None
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if ready.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    assert ready is not None and ready.status_code == 200, ready.text if ready else "no answer"
    assert ready.json()["targets"]["edge"]["ok"] is True

    jwt = scimgate("jwt", "mint", "--dir", str(d), "erin@example.com").stdout.strip()
    app = httpx.Client(base_url=f"http://127.0.0.1:{web}", timeout=5)
    bearer = {"Authorization": f"Bearer {jwt}"}
    assert app.get("/healthz").text.strip() == "ok"  # the public route
    assert app.get("/", headers=bearer).status_code == 403  # not provisioned yet

    scim = httpx.Client(
        base_url=f"https://127.0.0.1:{tls}/scim/v2",
        verify=ssl.create_default_context(cafile=str(ca)),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"},
        timeout=10,
    )
    created = scim.post(
        "/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "erin@example.com",
            "emails": [{"value": "erin@example.com", "primary": True}],
            "active": True,
        },
    )
    assert created.status_code == 201, created.text
    # read_your_writes: the 201 came after HAProxy confirmed the entry
    allowed = app.get("/", headers=bearer)
    assert allowed.status_code == 200 and allowed.text == "the application\n"
    assert app.get("/admin", headers=bearer).status_code == 403  # not in admins
    off = scim.patch(
        f"/Users/{created.json()['id']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": False}],
        },
    )
    assert off.status_code == 200, off.text
    assert app.get("/", headers=bearer).status_code == 403
