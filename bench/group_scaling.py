"""Section 2: one-member PATCH add/remove on a big group vs a small group (scimgate)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench import hap
from bench.common import HarnessError, log, pct, start_postgres, start_scimgate, stop_postgres
from bench.loadgen import Conn

PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _body(op: dict[str, Any]) -> bytes:
    return json.dumps({"schemas": [PATCHOP], "Operations": [op]}).encode()


def _one(srv: Any, gid: str, extra_users: list[int]) -> dict[str, Any]:
    """Interleaved: add user x (one-member add), then remove x (`members[value eq]`)."""
    c = Conn(srv.host, srv.port, srv.headers())
    c.request("GET", f"{srv.prefix}/ServiceProviderConfig")
    lat: dict[str, list[float]] = {"add": [], "remove": []}
    deadline = time.monotonic() + 60
    # CPU is read once around the loop (a /proc tree walk per request would compete with the
    # server for the 2 cores): CPU/op is the add+remove average.
    c0 = srv.cpu() + srv.extra_cpu()
    for u in extra_users:
        if time.monotonic() > deadline:
            break
        uid = hap.user_id(u)
        for kind, body in (
            ("add", _body({"op": "add", "path": "members", "value": [{"value": uid}]})),
            ("remove", _body({"op": "remove", "path": f'members[value eq "{uid}"]'})),
        ):
            t0 = time.perf_counter()
            st, data = c.request("PATCH", f"{srv.prefix}/Groups/{gid}", body)
            lat[kind].append((time.perf_counter() - t0) * 1000)
            if st not in (200, 204):
                raise HarnessError(f"group {kind}: {st} {data[:200]!r}")
    cpu = srv.cpu() + srv.extra_cpu() - c0
    c.close()
    nops = len(lat["add"]) + len(lat["remove"])
    return {
        k: {
            "ops": len(v),
            "p50_ms": round(pct(v, 50) or 0, 3),
            "p99_ms": round(pct(v, 99) or 0, 3),
            "total_server_cpu_ms_per_op": round(cpu * 1000 / nops, 3) if nops else None,
        }
        for k, v in lat.items()
    }


def _backend(
    name: str, url: str, d: Path, sizes: dict[str, Any], extra_pids: list[int]
) -> dict[str, Any]:
    big, small, ops = sizes["big"], sizes["small"], sizes["ops"]
    pre = hap.preload(url, big + ops + 5, groups=1, members_per_group=small, big_group=big)
    small_gid = pre["group_ids"][0]
    srv = start_scimgate(d / name, url, name, extra_pids=extra_pids)
    try:
        extra = list(range(big, big + ops))  # users in neither group
        warm = list(range(big + ops, big + ops + 5))
        _one(srv, small_gid, warm)  # warm-up (connection pools, statement caches), not recorded
        _one(srv, pre["big_group_id"], warm)
        r_small = _one(srv, small_gid, extra)
        r_big = _one(srv, pre["big_group_id"], extra)
    finally:
        srv.stop()
    out = {
        "small": r_small,
        "big": r_big,
        "ratio_add": round(r_big["add"]["p50_ms"] / r_small["add"]["p50_ms"], 3),
        "ratio_remove": round(r_big["remove"]["p50_ms"] / r_small["remove"]["p50_ms"], 3),
        "preload_seconds": pre["seconds"],
    }
    log(
        f"  {name}: add {r_small['add']['p50_ms']} → {r_big['add']['p50_ms']} ms ({out['ratio_add']}), "
        f"remove {r_small['remove']['p50_ms']} → {r_big['remove']['p50_ms']} ms ({out['ratio_remove']})"
    )
    return out


def run(sizes: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from scimgate.config import default_sqlite_url

    res: dict[str, Any] = {
        "big": sizes["big"],
        "small": sizes["small"],
        "ops": sizes["ops"],
        "backends": {},
    }
    d = workdir / "sqlite"
    d.mkdir()
    res["backends"]["scimgate-sqlite"] = _backend(
        "scimgate-sqlite", default_sqlite_url(d), workdir, sizes, []
    )
    if "postgresql" not in sizes.get("backends", ["sqlite", "postgresql"]):
        return res
    pg = start_postgres()
    try:
        res["backends"]["scimgate-postgresql"] = _backend(
            "scimgate-postgresql", pg.create_database(), workdir, sizes, [pg.proc.pid]
        )
    finally:
        stop_postgres(pg)
    return res
