"""Run the scimgate benchmarks: `python -m bench.run [--quick] [--only scim,resync,...]`.

Writes <out>/latest.json, PNG charts and the Markdown report (docs/benchmarks.md for a full
run; the quick run writes everything under bench/results/quick/ so that CI exercises the
whole pipeline without touching the committed results). Exits non-zero on a harness error
(a server that does not start, failing requests, a crash); never on a timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, HarnessError, environment, log, write_json

if str(ROOT) not in sys.path:  # `from tests.fixtures...` in the sections
    sys.path.insert(0, str(ROOT))

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "scim": {
            "concurrency": [1, 8, 32],
            # 300 ops: CPU is read in 10 ms ticks, so ~0.03 ms per op of resolution (the
            # sync engine's target is 0.5 ms per change).
            "ops": 300,
            "group_ops": 30,
            "remove_ops": 30,
            "list_ops": 30,
            "group_size": 2000,
            "time_limit": 8,
            # the product as `scimgate up` runs it, and `serve` without a target (reference)
            "deployed": ["sqlite", "postgresql"],
            "backends": ["sqlite", "postgresql"],
            # the SQLite target ratios again: alternating rounds, both servers running
            "spread_rounds": 4,
            "spread_ops": 200,
        },
        "group_scaling": {"big": 100_000, "small": 10, "ops": 200},
        "propagation": {
            "sizes": [1_000, 100_000, 1_000_000],
            "users": 1000,
            "ryw_users": 150,
            "stall_updates": 200,
            "deadline": 35,  # seconds of measured deactivations per configuration
        },
        "resync": {"sizes": [10_000, 100_000, 1_000_000]},
        "request_path": {"sizes": [100_000, 1_000_000], "duration": 5, "jwts": 2000},
        "footprint": {"users": 100_000, "groups": 1000},
    },
    "quick": {
        # quick: scimgate on SQLite only (the PostgreSQL paths run in the full bench)
        "scim": {
            "concurrency": [8],  # the load; keeps the CI run near 90 s
            "ops": 20,
            "group_ops": 5,
            "remove_ops": 5,
            "list_ops": 8,
            "group_size": 200,
            "time_limit": 3,
            "backends": ["sqlite"],
            "deployed": ["sqlite"],  # CI exercises the `scimgate up` path too
        },
        "group_scaling": {"big": 5_000, "small": 10, "ops": 15, "backends": ["sqlite"]},
        "propagation": {
            "sizes": [1_000],
            "users": 30,
            "ryw_users": 10,
            "stall_updates": 20,
            "deadline": 10,
        },
        "resync": {"sizes": [10_000]},
        "request_path": {"sizes": [10_000], "duration": 1, "jwts": 100},
        "footprint": {"users": 3_000, "groups": 30},
    },
}

SECTIONS = ["scim", "group_scaling", "resync", "request_path", "propagation", "footprint"]


def _section_module(name: str) -> Any:
    import importlib

    return importlib.import_module({"scim": "bench.scim_ops"}.get(name, f"bench.{name}"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run")
    ap.add_argument("--quick", action="store_true", help="small sizes (CI; about 2 minutes)")
    ap.add_argument("--only", default="", help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument(
        "--out",
        default=None,
        help="results directory (default bench/results, quick: bench/results/quick)",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the other sections of an existing latest.json (with --only)",
    )
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    out = Path(args.out) if args.out else (RESULTS / "quick" if args.quick else RESULTS)
    doc = (
        ROOT / "docs" / "benchmarks.md"
        if mode == "full" and not args.out
        else out / "benchmarks.md"
    )
    only = [s for s in args.only.split(",") if s] or SECTIONS
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")

    started = time.monotonic()
    result: dict[str, Any] = {}
    if args.merge and (out / "latest.json").exists():
        import json

        result = json.loads((out / "latest.json").read_text())
    result.update(
        {
            "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mode": mode,
            "env": environment(),
            "only": [s for s in args.only.split(",") if s],
        }
    )
    if not args.merge:
        result["sections"] = {}
        result["skipped"] = {}
    result.setdefault("sections", {})
    result.setdefault("skipped", {})
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="scimgate-bench-") as tmp:
        for name in only:
            t0 = time.monotonic()
            log(f"section {name} ({mode})")
            load0 = os.getloadavg()[0]
            try:
                mod = _section_module(name)
                avail = getattr(mod, "available", lambda: None)()
                if avail:  # a reason why the section cannot run here
                    log(f"section {name} skipped: {avail}")
                    result["skipped"][name] = avail
                    result["sections"].pop(name, None)
                    continue
                d = Path(tmp) / name
                d.mkdir()
                data = mod.run(SIZES[mode][name], d)
                data["seconds"] = round(time.monotonic() - t0, 1)
                data["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                data["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                result["sections"][name] = data
                result["skipped"].pop(name, None)
            except Exception as exc:
                traceback.print_exc()
                kind = "harness error" if isinstance(exc, HarnessError) else type(exc).__name__
                failures[name] = f"{kind}: {exc}"
                result["sections"].pop(name, None)
            log(f"section {name} done in {time.monotonic() - t0:.0f}s")
            # Save after every section: a later crash or kill keeps what was measured.
            result["failures"] = failures
            write_json(out / "latest.json", result)
    result["failures"] = failures
    result["duration_s"] = round(time.monotonic() - started, 1)
    from bench import report

    result["targets"] = report.targets(result)
    write_json(out / "latest.json", result)
    report.write_all(result, out, doc)
    log(f"wrote {out / 'latest.json'} and {doc} in {result['duration_s']}s")
    if failures:
        for k, v in failures.items():
            log(f"FAILED {k}: {v}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
