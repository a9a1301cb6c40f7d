"""/readyz and `scimgate status` follow the HAProxy target through a real `scimgate up`:
ready when synced, unready (naming the target) while HAProxy is down, ready again once it
is back. /healthz (liveness) stays 200 throughout. Every poll is bounded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_up import UpStack, scimgate, start_up
from tests.support import stack as st

pytestmark = pytest.mark.haproxy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpStack]:
    up = start_up(tmp_path_factory.mktemp("ready"))
    try:
        yield up
    finally:
        up.stop()


def status(up: UpStack) -> tuple[int, dict[str, Any]]:
    out = scimgate("status", "--dir", up.info["dir"], "--json")
    return out.returncode, json.loads(out.stdout)


def poll_ready(up: UpStack, want: int, timeout: float) -> tuple[dict[str, Any], float]:
    """Poll /readyz until it answers ``want``; /healthz must be 200 at every step."""
    start = time.monotonic()
    while True:
        assert st.healthz(up).status_code == 200
        r = st.readyz(up)
        elapsed = time.monotonic() - start
        if r.status_code == want:
            return r.json(), elapsed
        assert r.status_code in (200, 503), r.text
        assert elapsed < timeout, f"/readyz still {r.status_code} after {elapsed:.1f}s: {r.text}"
        time.sleep(0.1)


def test_readyz_and_status_follow_the_haproxy_target(stack: UpStack) -> None:
    body, _ = poll_ready(stack, 200, 15)
    assert body["status"] == "ready"
    assert body["targets"]["local"]["ok"] is True
    with stack.scim() as scim:
        assert st.create_user(scim, "ready@example.com").status_code == 201
    rc, report = status(stack)
    assert rc == 0, report
    assert report["healthy"] is True
    assert [(t["target"], t["reachable"]) for t in report["targets"]] == [("local", True)]

    st.kill_haproxy(stack.info["master_api"])
    body, took_down = poll_ready(stack, 503, 10)
    print(f"RECOVERY readyz 503 after HAProxy SIGKILL: {took_down:.2f}s", flush=True)
    assert body["status"] == "unready"
    assert body["database"] == "ok"
    local = body["targets"]["local"]  # the target is named
    assert local["ok"] is False and local["reachable"] is False
    assert local["error"]
    rc, report = status(stack)
    assert rc == 1, report
    assert report["healthy"] is False
    (target,) = report["targets"]
    assert target["target"] == "local" and target["reachable"] is False
    assert target["probe_error"]
    with stack.scim() as scim:  # SCIM still takes writes (read-your-writes waits, bounded)
        assert st.create_user(scim, "while-down@example.com").status_code == 201

    proc = st.haproxy_for(stack)
    with st.started(proc):
        body, took_up = poll_ready(stack, 200, 20)
        print(f"RECOVERY readyz 200 after HAProxy restart: {took_up:.2f}s", flush=True)
        assert body["targets"]["local"] == {
            "reachable": True, "lag": 0, "ok": True, "error": None,
        }  # fmt: skip
        assert st.mismatch(stack) == ""
        rc, report = status(stack)
        assert rc == 0, report
        assert report["healthy"] is True and report["targets"][0]["reachable"] is True
        assert report["targets"][0]["live_entries"] == len(st.desired(stack)) == 2
