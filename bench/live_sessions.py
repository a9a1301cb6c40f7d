"""Live-session cut: SCIM deactivation response → the user's WebSocket closed by HAProxy.

A real `scimgate up` (SQLite, read-your-writes on as `up` sets it, the demo policy's `/ws`
echo route) on the HAProxy binary in $SCIMGATE_HAPROXY. For each of N users, one after
another: open a WebSocket through HAProxy with the user's RS256 JWT (it echoes once, then
stays idle), `PATCH active=false` over SCIM on a keep-alive connection; the clock starts
when the response has been read and stops when the client sees the connection closed
(bounded at CUT_LIMIT s: counted as not cut). A bystander's WebSocket, open the whole time,
must still echo at the end. Goal: p99 ≤ 100 ms.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import HarnessError, haproxy_bin, log, pct

CUT_LIMIT = 2.0
PATCH_OFF = {
    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [{"op": "replace", "path": "active", "value": False}],
}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def available() -> str | None:
    return None if haproxy_bin() else "haproxy not installed"


def _user(scim: httpx.Client, name: str) -> str:
    body = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "emails": [{"value": name, "primary": True}],
    }
    r = scim.post("/Users", content=json.dumps(body))
    if r.status_code != 201:
        raise HarnessError(f"POST /Users -> {r.status_code}: {r.text[:200]}")
    return str(r.json()["id"])


def run(sizes: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from tests.support.stack import Minter
    from tests.support.tunnels import echoes, open_ws, seconds_until_closed
    from tests.support.up import start_up

    up = start_up(workdir / "up")
    try:
        url = str(up.info["demo_ws_url"])
        mint = Minter(up)
        cuts: list[float] = []
        patch_ms: list[float] = []
        not_cut = 0
        with up.scim() as scim:
            bystander_name = f"bystander-{time.time_ns()}@example.com"
            _user(scim, bystander_name)
            bystander = open_ws(url, mint(bystander_name))
            users = []
            for i in range(sizes["users"]):
                name = f"live{i:05d}-{time.time_ns()}@example.com"
                users.append((_user(scim, name), mint(name)))
            for uid, token in users:
                ws = open_ws(url, token)
                t0 = time.perf_counter()
                r = scim.patch(f"/Users/{uid}", content=json.dumps(PATCH_OFF))
                t1 = time.perf_counter()
                if r.status_code != 200:
                    raise HarnessError(f"PATCH -> {r.status_code}: {r.text[:200]}")
                closed = seconds_until_closed(ws, CUT_LIMIT)
                if closed is None:
                    not_cut += 1
                    ws.close()
                else:
                    cuts.append(closed * 1000)
                patch_ms.append((t1 - t0) * 1000)
            bystander_open = echoes(bystander)
            bystander.close()
        if not bystander_open:
            raise HarnessError("the bystander's WebSocket was closed: a cut hit the wrong user")
        version = up.info.get("haproxy_version")
    finally:
        up.stop()
    res = {
        "haproxy": version,
        "n": len(cuts),
        "not_cut": not_cut,
        "p50_ms": _round(pct(cuts, 50)),
        "p99_ms": _round(pct(cuts, 99)),
        "max_ms": round(max(cuts), 2) if cuts else None,
        "patch_p50_ms": _round(pct(patch_ms, 50)),
        "target_p99_ms": 100,
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
    }
    log(
        f"  live-session cut ({version}): p50 {res['p50_ms']} p99 {res['p99_ms']} max "
        f"{res['max_ms']} ms, {not_cut} not cut, PATCH p50 {res['patch_p50_ms']} ms"
    )
    return res
