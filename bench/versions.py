"""HAProxy 2.6 beside 3.0 LTS: propagation (SCIM response → first 403), resync and the
request path on each version, and the live-session cut (SCIM response → closed WebSocket).

    python -m bench.versions [--quick] [--only propagation,resync,request_path,live_sessions]

Runs the existing sections (bench/propagation.py, resync.py, request_path.py) once per
HAProxy binary found (tests/support/versions.py: Debian 12's 2.6, and 3.0.11 from
scripts/build-haproxy-3.0.sh), each with the map layout scimgate chooses for that version
(16 shards below 2.9, one map from 2.9 on), plus bench/live_sessions.py. Writes
bench/results/versions.json (quick: bench/results/quick/versions.json) and prints a
summary; exits non-zero on a harness error, never on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, environment, log, write_json

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "propagation": {
            "sizes": [1_000_000],
            "users": 400,
            "ryw_users": 100,
            "stall_updates": 200,
            "deadline": 30,
        },
        "resync": {"sizes": [100_000, 1_000_000]},
        "request_path": {"sizes": [1_000_000], "duration": 5, "jwts": 2000},
        "live_sessions": {"users": 200},
    },
    "quick": {
        "propagation": {
            "sizes": [1_000],
            "users": 30,
            "ryw_users": 10,
            "stall_updates": 20,
            "deadline": 10,
        },
        "resync": {"sizes": [10_000]},
        "request_path": {"sizes": [10_000], "duration": 1, "jwts": 100},
        "live_sessions": {"users": 20},
    },
}
SECTIONS = ["propagation", "resync", "request_path", "live_sessions"]


def _summary(label: str, name: str, data: dict[str, Any]) -> list[str]:
    out = []
    if name == "propagation":
        for r in data.get("runs", []):
            out.append(
                f"{label}  propagation {r['identities']:>9,} ids  targets={r['targets']} "
                f"ryw={r['ryw']!s:<5}  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  max {r['max_ms']} ms"
            )
        for s in data.get("stall", []):
            out.append(
                f"{label}  request stall during updates  max {s['max_ms']} ms  p99 {s['p99_ms']} ms"
            )
    elif name == "resync":
        for r in data.get("runs", []):
            out.append(
                f"{label}  resync {r['identities']:>9,} ids  {r['seconds']} s  RSS peak {r.get('rss_peak_mb')} MB"
            )
    elif name == "request_path":
        for r in data.get("runs", []):
            out.append(
                f"{label}  request path  {r['label']:<40} {r['rps']:>9,.0f} req/s  ratio {r.get('ratio')}"
            )
    elif name == "live_sessions":
        out.append(
            f"{label}  live-session cut (SCIM response → closed socket, n={data['n']})  "
            f"p50 {data['p50_ms']} ms  p99 {data['p99_ms']} ms  max {data['max_ms']} ms  "
            f"not cut {data['not_cut']}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    from tests.support.versions import VERSION_LABELS, find_binary

    from bench import hap
    from scimgate.sync import choose_shards

    ap = argparse.ArgumentParser(prog="python -m bench.versions")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated: " + ",".join(SECTIONS))
    ap.add_argument("--versions", default=",".join(VERSION_LABELS))
    args = ap.parse_args(argv)
    mode = "quick" if args.quick else "full"
    only = [s for s in args.only.split(",") if s] or SECTIONS
    out = (RESULTS / "quick" if args.quick else RESULTS) / "versions.json"
    result: dict[str, Any] = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": mode,
        "env": environment(),
        "versions": {},
        "failures": {},
    }
    kept: dict[str, Any] = {}
    if out.exists():  # keep what this run does not measure (``--versions 3.0``, ``--only``)
        kept = json.loads(out.read_text()).get("versions", {})
        result["versions"] = {k: v for k, v in kept.items() if k not in args.versions.split(",")}
    summary: list[str] = []
    for label in [v for v in args.versions.split(",") if v]:
        binary = find_binary(label)
        if binary is None:
            log(f"HAProxy {label}: no binary (scripts/build-haproxy-3.0.sh builds 3.0)")
            result["versions"][label] = {"skipped": "no binary"}
            continue
        os.environ["SCIMGATE_HAPROXY"] = binary.path  # every HAProxyProcess of the sections
        hap.SHARDS = choose_shards(binary.version)  # the layout scimgate picks for it
        per: dict[str, Any] = {"binary": binary.path, "version": ".".join(map(str, binary.version)),
                               "shards": hap.SHARDS, "sections": {}}  # fmt: skip
        previous = kept.get(label, {})
        if previous.get("version") == per["version"]:
            per["sections"] = {
                k: v for k, v in previous.get("sections", {}).items() if k not in only
            }
        result["versions"][label] = per
        with tempfile.TemporaryDirectory(prefix=f"scimgate-bench-{label}-") as tmp:
            for name in only:
                t0 = time.monotonic()
                log(f"HAProxy {label} ({per['version']}, {hap.SHARDS} shard(s)): {name} ({mode})")
                mod = __import__(f"bench.{name}", fromlist=["run"])
                d = Path(tmp) / name
                d.mkdir()
                load0 = os.getloadavg()[0]
                try:
                    data = mod.run(SIZES[mode][name], d)
                except Exception as exc:
                    traceback.print_exc()
                    result["failures"][f"{label}/{name}"] = f"{type(exc).__name__}: {exc}"
                    continue
                data["seconds"] = round(time.monotonic() - t0, 1)
                # a shared machine's load makes tail latencies; say how loaded it was
                data["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                per["sections"][name] = data
                summary += _summary(label, name, data)
                write_json(out, result)
        hap._SHARED.clear()  # keys are per temporary directory
    write_json(out, result)
    print("\n".join(["", f"HAProxy versions ({mode}), {out}:", *summary]), flush=True)
    if result["failures"]:
        log("FAILED: " + json.dumps(result["failures"]))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
