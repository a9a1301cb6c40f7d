"""What SQLite's durable commit costs: `scimgate serve` (no target) with
``sqlite_synchronous: NORMAL`` (the test fixture's, and section 1's reference rows) against
``FULL`` (the product default, what `scimgate up` runs), alternating rounds.

    python -m bench.ab_synchronous [--ops 300] [--rounds 4]

Each round: ``--ops`` creates then as many ``active=false`` PATCHes at 8 connections on a fresh
server; prints server CPU per op per round and the medians (min-max).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.common import HarnessError, start_scimgate
from bench.loadgen import Req, run_load
from bench.scim_ops import patch, user_body

MODES = ("NORMAL", "FULL")


def one_round(mode: str, n: int, tag: str) -> dict[str, float]:
    from scimgate.config import default_sqlite_url

    with tempfile.TemporaryDirectory(prefix="ab-sync-") as d:
        # The fixture writes NORMAL; a later key of the same name wins in the YAML load.
        srv = start_scimgate(
            Path(d), default_sqlite_url(Path(d)), mode, extra_yaml=f"sqlite_synchronous: {mode}\n"
        )
        try:
            p = srv.prefix
            bodies: list[bytes | None] = [None] * n
            posts = [Req("POST", f"{p}/Users", user_body(f"{tag}x{i}.s"), (201,)) for i in range(n)]
            create = run_load(
                srv.host, srv.port, srv.headers(), posts, 8, time_limit=120,
                server_cpu=srv.cpu, bodies=bodies, warm_path=f"{p}/ServiceProviderConfig",
            ).summary()  # fmt: skip
            ids = [json.loads(b)["id"] for b in bodies if b]
            off = patch([{"op": "replace", "path": "active", "value": False}])
            deact = run_load(
                srv.host, srv.port, srv.headers(),
                [Req("PATCH", f"{p}/Users/{i}", off, (200, 204)) for i in ids], 8,
                time_limit=120, server_cpu=srv.cpu, warm_path=f"{p}/ServiceProviderConfig",
            ).summary()  # fmt: skip
        finally:
            srv.stop()
    for r in (create, deact):
        if r["errors"]:
            raise HarnessError(f"{mode}: {r['error_samples']}")
    return {
        "create": create["total_server_cpu_ms_per_op"],
        "deactivate": deact["total_server_cpu_ms_per_op"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ab_synchronous")
    ap.add_argument("--ops", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    got: dict[str, dict[str, list[float]]] = {m: {"create": [], "deactivate": []} for m in MODES}
    for r in range(args.rounds):
        for mode in MODES if r % 2 == 0 else tuple(reversed(MODES)):
            res = one_round(mode, args.ops, f"r{r}{mode[0]}")
            for op, v in res.items():
                got[mode][op].append(v)
            print(f"round {r + 1} {mode:6s} {res}", flush=True)
    for mode, ops in got.items():
        for op, xs in ops.items():
            print(
                f"median {mode:6s} {op:10s} {statistics.median(xs):.3g} ms "
                f"({min(xs):.3g}-{max(xs):.3g})"
            )


if __name__ == "__main__":
    main()
