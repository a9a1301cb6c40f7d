"""Before/after of a change in the API or sync path, on the product as deployed.

    python -m bench.ab_up BEFORE_SRC [AFTER_SRC] [--ops 400] [--rounds 4]

Starts `scimgate up` (bench.common.start_up) from two source trees in turn (PYTHONPATH
points the child at each ``src``; AFTER_SRC defaults to this checkout's), alternating the
order every round so that the shared machine's drift falls on both, and runs the same
closed loop at 8 connections on each: ``--ops`` creates, then as many ``active=false``
PATCHes. Prints per round and as medians (min-max) the server CPU per op, its API and sync
engine (`sync-*` threads) shares, and throughput. A tree to compare against is made with
``git archive <commit> src | tar -x -C /tmp/before``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROOT, HarnessError, start_up
from bench.loadgen import Req, run_load
from bench.scim_ops import patch, user_body

KEYS = ("total_server_cpu_ms_per_op", "api_cpu_ms_per_op", "sync_cpu_ms_per_op", "ops_per_s")
CONCURRENCY = 8


def one_round(src: str, name: str, n: int, tag: str) -> dict[str, dict[str, Any]]:
    """creates then deactivations of ``n`` fresh users on `scimgate up` run from ``src``."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = src
    try:
        with tempfile.TemporaryDirectory(prefix="ab-up-") as d:
            srv, _ = start_up(Path(d), name)
            try:
                p = srv.prefix
                kw: dict[str, Any] = {
                    "time_limit": 120,
                    "server_cpu": srv.cpu,
                    "probes": srv.probes(),
                    "warm_path": f"{p}/ServiceProviderConfig",
                }
                bodies: list[bytes | None] = [None] * n
                posts = [
                    Req("POST", f"{p}/Users", user_body(f"{tag}x{i}.ab"), (201,)) for i in range(n)
                ]
                create = run_load(
                    srv.host, srv.port, srv.headers(), posts, CONCURRENCY, bodies=bodies, **kw
                ).summary()
                ids = [json.loads(b)["id"] for b in bodies if b]
                off = patch([{"op": "replace", "path": "active", "value": False}])
                patches = [Req("PATCH", f"{p}/Users/{i}", off, (200, 204)) for i in ids]
                deactivate = run_load(
                    srv.host, srv.port, srv.headers(), patches, CONCURRENCY, **kw
                ).summary()
            finally:
                srv.stop()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    for r in (create, deactivate):
        if r["errors"]:
            raise HarnessError(f"{name}: {r['errors']} errors: {r['error_samples']}")
    return {"create": create, "deactivate": deactivate}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ab_up")
    ap.add_argument("before", help="the `src` directory of the tree to compare against")
    ap.add_argument("after", nargs="?", default=str(ROOT / "src"))
    ap.add_argument("--ops", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    trees = {"before": args.before, "after": args.after}
    got: dict[str, dict[str, list[dict[str, Any]]]] = {
        k: {"create": [], "deactivate": []} for k in trees
    }
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            res = one_round(trees[name], name, args.ops, f"r{r}{name[0]}")
            for op, m in res.items():
                row = {k: m[k] for k in KEYS}
                got[name][op].append(row)
                print(f"round {r + 1} {name:6s} {op:10s} {row}", flush=True)
    for name in trees:
        for op, rows in got[name].items():
            summary = {
                k: f"{statistics.median(x[k] for x in rows):.3g} "
                f"({min(x[k] for x in rows):.3g}–{max(x[k] for x in rows):.3g})"  # noqa: RUF001
                for k in KEYS
            }
            print(f"median {name:6s} {op:10s} {summary}")


if __name__ == "__main__":
    main()
