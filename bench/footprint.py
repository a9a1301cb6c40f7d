"""Section 6: scimgate memory with N users and G groups loaded."""

from __future__ import annotations

import random
import urllib.parse
from pathlib import Path
from typing import Any

from bench import hap
from bench.common import HarnessError, log, rss_mb, start_scimgate
from bench.loadgen import Req, run_load


def _hwm(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1000
    return 0.0


def run(sizes: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from scimgate.config import default_sqlite_url

    n, g = sizes["users"], sizes["groups"]
    per = 100
    d = workdir / "fp"
    d.mkdir()
    url = default_sqlite_url(d)
    pre = hap.preload(url, n, groups=g, members_per_group=per)
    srv = start_scimgate(d, url, "scimgate-sqlite")
    try:
        idle = rss_mb(srv.pid)
        rnd = random.Random(3)
        p = srv.prefix
        reqs = []
        for _ in range(100):
            reqs.append(
                Req("GET", f"{p}/Users?startIndex={rnd.randint(1, max(1, n - 100))}&count=100")
            )
            reqs.append(
                Req(
                    "GET",
                    f"{p}/Users?filter="
                    + urllib.parse.quote(
                        f'userName eq "{hap.identity(rnd.randrange(n))}"', safe=""
                    ),
                )
            )
            reqs.append(Req("GET", f"{p}/Groups/{pre['group_ids'][rnd.randrange(g)]}"))
            reqs.append(
                Req("GET", f"{p}/Groups?startIndex={rnd.randint(1, max(1, g - 10))}&count=10")
            )
        res = run_load(
            srv.host, srv.port, srv.headers(), reqs, 8, time_limit=60, server_cpu=srv.cpu
        ).summary()
        if res["errors"]:
            raise HarnessError(f"footprint traffic errors: {res['error_samples']}")
        after = rss_mb(srv.pid)
        hwm = _hwm(srv.pid)
    finally:
        srv.stop()
    log(
        f"  footprint {n:,} users / {g:,} groups: RSS idle {idle:.0f} MB, after traffic {after:.0f} MB, HWM {hwm:.0f}"
    )
    return {
        "users": n,
        "groups": g,
        "memberships": g * per,
        "rss_idle_mb": round(idle, 1),
        "rss_mb": round(after, 1),
        "hwm_mb": round(hwm, 1),
        "traffic": res,
        "method": (
            f"`scimgate serve` on SQLite with {n:,} users and {g:,} groups ({per} members each) "
            "bulk-inserted into the store; VmRSS of the serve process when idle after start, and after "
            f"{len(reqs)} mixed reads at concurrency 8 (pages of 100 users, userName lookups, groups "
            "with their members, group pages); VmHWM is the peak."
        ),
    }
