"""Section 3: propagation. SCIM deactivation response → first 403 at HAProxy, through the
real product: `scimgate serve` with its embedded sync engine and HAProxy target(s) running
the product's rendered config; plus the longest request stall during a burst of updates."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from bench import hap
from bench.common import HarnessError, free_port, haproxy_bin, log, pct, start_serve
from bench.loadgen import Conn, Req, run_load

PATCH_OFF = json.dumps(
    {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
).encode()
POLL_LIMIT = 3.0  # seconds per user before we give up on seeing the 403


def available() -> str | None:
    if not haproxy_bin():
        return "haproxy not installed"
    try:
        import scimgate.sync.engine  # noqa: F401
    except ImportError:
        return "the sync engine (scimgate.sync.engine) is not in this tree"
    return None


def _settings(d: Path, keys: hap.Keys, proxies: list[hap.Proxy], ryw: bool) -> Any:
    from scimgate.config import Settings, TargetConfig, default_sqlite_url

    return Settings(
        base_dir=d,
        database_url=default_sqlite_url(d),
        port=free_port(),
        policy_file=keys.base / "policy.yaml",
        hmac_secret_file=keys.base / "hmac.key",
        map_shards=hap.SHARDS,
        read_your_writes=ryw,
        targets=[
            TargetConfig(
                name=f"t{i}",
                runtime_api=f"unix:{p.admin}",
                master_api=f"unix:{p.master}",
                map_dir=str(p.map_dir),
            )
            for i, p in enumerate(proxies)
        ],
    )


def _wait_synced(srv: Any, d: Path, timeout: float) -> float | None:
    """Until /readyz says every target is in sync; returns the startup resync seconds."""
    c = Conn(srv.host, srv.port, {})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            st, _ = c.request("GET", "/readyz")
            if st == 200:
                break
            time.sleep(0.2)
        else:
            raise HarnessError(
                f"scimgate not ready after {timeout}s: {(d / 'server.log').read_text()[-1500:]}"
            )
    finally:
        c.close()
    secs = re.findall(r'"sync: full resync".*?"seconds": ([\d.]+)', (d / "server.log").read_text())
    return max(float(s) for s in secs) if secs else None


def _measure(
    srv: Any, proxies: list[hap.Proxy], keys: hap.Keys, users: list[int], deadline: float
) -> dict[str, Any]:
    scim = Conn(srv.host, srv.port, srv.headers())
    toks = {u: keys.jwt(hap.identity(u)) for u in users}
    hcs = [Conn("127.0.0.1", p.port, {}) for p in proxies]
    # Every user is allowed before (this also puts each token in the verified-token cache).
    for u in users:
        for hc in hcs:
            st, body = hc.request("GET", "/", headers={"Authorization": f"Bearer {toks[u]}"})
            if st != 200:
                raise HarnessError(f"user {u} not allowed before deactivation: {st} {body[:200]!r}")
    lat, patch_ms, served_after, timeouts = [], [], 0, 0
    for u in users:
        if time.monotonic() > deadline:
            break
        hdr = {"Authorization": f"Bearer {toks[u]}"}
        t_req = time.perf_counter()
        st, body = scim.request("PATCH", f"{srv.prefix}/Users/{hap.user_id(u)}", PATCH_OFF)
        t0 = time.perf_counter()
        if st not in (200, 204):
            raise HarnessError(f"PATCH deactivate user {u}: {st} {body[:200]!r}")
        patch_ms.append((t0 - t_req) * 1000)
        pending = list(range(len(hcs)))
        done_at = None
        while pending and time.perf_counter() - t0 < POLL_LIMIT:
            for i in list(pending):
                st, _ = hcs[i].request("GET", "/", headers=hdr)
                if st == 403:
                    pending.remove(i)
                else:
                    served_after += 1
            if not pending:
                done_at = time.perf_counter()
        if done_at is None:
            timeouts += 1
            lat.append(POLL_LIMIT * 1000)
        else:
            lat.append((done_at - t0) * 1000)
    scim.close()
    for hc in hcs:
        hc.close()
    return {
        "n": len(lat),
        "p50_ms": round(pct(lat, 50) or 0, 3),
        "p99_ms": round(pct(lat, 99) or 0, 3),
        "max_ms": round(max(lat) if lat else 0, 3),
        "patch_p50_ms": round(pct(patch_ms, 50) or 0, 2),
        "patch_p99_ms": round(pct(patch_ms, 99) or 0, 2),
        "allowed_after_response": served_after,
        "timeouts": timeouts,
    }


def _stall(
    srv: Any, proxy: hap.Proxy, keys: hap.Keys, probe_user: int, users: list[int]
) -> dict[str, Any]:
    tok = keys.jwt(hap.identity(probe_user))
    stop = threading.Event()
    samples: list[tuple[float, float]] = []

    failed: list[str] = []

    def probe() -> None:
        try:
            _probe()
        except Exception as exc:  # reported by the main thread
            failed.append(repr(exc))

    def _probe() -> None:
        c = Conn("127.0.0.1", proxy.port, {"Authorization": f"Bearer {tok}"})
        end = time.monotonic() + 120  # bounded even if the burst hangs
        while not stop.is_set() and time.monotonic() < end:
            t = time.perf_counter()
            st, _ = c.request("GET", "/")
            samples.append((t, (time.perf_counter() - t) * 1000))
            if st != 200:
                raise HarnessError(f"probe got {st}")
            time.sleep(0.001)
        c.close()

    th = threading.Thread(target=probe, daemon=True)
    th.start()
    time.sleep(1.0)
    t_burst = time.perf_counter()
    res = run_load(
        srv.host,
        srv.port,
        srv.headers(),
        [
            Req("PATCH", f"{srv.prefix}/Users/{hap.user_id(u)}", PATCH_OFF, (200, 204))
            for u in users
        ],
        4,
        time_limit=60,
        server_cpu=lambda: 0.0,
    )
    time.sleep(1.0)  # the engine may still be applying the tail of the burst
    stop.set()
    th.join(10)
    if failed:
        raise HarnessError(f"stall probe failed: {failed[0]}")
    idle = [ms for t, ms in samples if t < t_burst]
    busy = [ms for t, ms in samples if t >= t_burst]
    return {
        "updates": res.summary()["ok"],
        "probes": len(busy),
        "p99_ms": round(pct(busy, 99) or 0, 2),
        "max_ms": round(max(busy) if busy else 0, 2),
        "idle_max_ms": round(max(idle) if idle else 0, 2),
        "burst_seconds": round(res.wall, 2),
    }


def run(sizes: dict[str, Any], workdir: Path) -> dict[str, Any]:
    keys = hap.shared_keys(workdir)
    n_users, n_ryw, n_stall = sizes["users"], sizes["ryw_users"], sizes["stall_updates"]
    # every identity is a real SCIM user: `serve` applies the policy at start as users run
    # it, and that removes map entries no user owns
    plan = {
        "plain": range(0, n_users),
        "ryw": range(n_users, n_users + n_ryw),
        "two": range(n_users + n_ryw, n_users + n_ryw + n_users // 2),
        "stall": range(n_users + n_ryw + n_users // 2, n_users + n_ryw + n_users // 2 + n_stall),
    }
    probe_user = plan["stall"].stop
    m = probe_user + 1
    runs: list[dict[str, Any]] = []
    stalls: list[dict[str, Any]] = []
    resyncs: list[dict[str, Any]] = []
    for n in sizes["sizes"]:
        d = workdir / f"p{n}"
        d.mkdir()
        from scimgate.config import default_sqlite_url

        # Every measured user must exist: at the smallest size the identity count is raised
        # to the number of users the runs need (reported as the actual count).
        n = max(n, m)
        hap.preload(default_sqlite_url(d), n, keys=keys)
        entries = hap.synthetic_entries(keys, n)
        proxies = [hap.start_proxy(d / "h0", keys, entries)]
        try:
            for cfg in ("plain", "ryw", "two"):
                if cfg == "two":
                    proxies.append(hap.start_proxy(d / "h1", keys, entries))
                settings = _settings(d, keys, proxies, ryw=(cfg == "ryw"))
                srv = start_serve(d, settings, f"scimgate-{cfg}")
                try:
                    rs = _wait_synced(srv, d, timeout=300)
                    if cfg == "plain":
                        resyncs.append({"identities": n, "startup_resync_seconds": rs})
                    users = list(plan[cfg])
                    r = _measure(
                        srv, proxies, keys, users, time.monotonic() + sizes.get("deadline", 60)
                    )
                    r.update(identities=n, ryw=cfg == "ryw", targets=len(proxies))
                    runs.append(r)
                    log(
                        f"  propagation {n:,} {cfg}: p50 {r['p50_ms']} p99 {r['p99_ms']} max {r['max_ms']} ms "
                        f"(PATCH p50 {r['patch_p50_ms']} ms, {r['timeouts']} timeouts, n={r['n']})"
                    )
                    if cfg == "plain":
                        s = _stall(srv, proxies[0], keys, probe_user, list(plan["stall"]))
                        s["identities"] = n
                        stalls.append(s)
                        log(
                            f"  stall {n:,}: max {s['max_ms']} ms p99 {s['p99_ms']} (idle max {s['idle_max_ms']})"
                        )
                finally:
                    srv.stop()
        finally:
            for p in proxies:
                p.stop()
    return {
        "runs": runs,
        "stall": stalls,
        "engine_resync": resyncs,
        "method": (
            "`scimgate serve` (SQLite, product defaults) with its embedded sync engine and one or two HAProxy "
            f"targets running the product's rendered config for the demo policy ({hap.SHARDS} map shards, JWT "
            "identity). N identities are preloaded as SCIM users (direct inserts into `scim_users` + "
            "`map_entries`); `serve` applies the policy at start (as in production: it recomputes every "
            "user's entries), HAProxy starts from map files holding all N, and the engine's startup resync "
            "(timed in latest.json, `engine_resync`) makes them authoritative. For each user: one allowed "
            "GET through HAProxy with "
            "the user's RS256 JWT (warms the verified-token cache), then `PATCH active=false` over SCIM; the "
            "clock starts when the response has been read, and the same keep-alive HAProxy connection "
            f"GETs until the first 403 (both targets with 2 targets; bounded at {POLL_LIMIT:.0f} s per user). "
            "*read-your-writes* = the response waits until every target confirmed the change. "
            "The stall probe does one keep-alive GET about every 1 ms while "
            f"{n_stall} deactivations are sent at concurrency 4."
        ),
    }
