"""Section 5: the request path through HAProxy (wrk -t2 -c50)."""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path
from typing import Any

from bench import hap
from bench.common import HarnessError, cpu_seconds, haproxy_bin, log


def available() -> str | None:
    if not haproxy_bin():
        return "haproxy not installed"
    if subprocess.run(["sh", "-c", "command -v wrk"], capture_output=True).returncode:
        return "wrk not installed"
    return None


def wrk(port: int, duration: int, script: Path | None = None, path: str = "/") -> dict[str, Any]:
    cmd = ["wrk", "-t2", "-c50", f"-d{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise HarnessError(f"wrk output not understood: {out[-500:]}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99ms = None
    if p99:
        p99ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    return {
        "rps": float(m.group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "requests": int(total.group(1)) if total else None,
        "p99_ms": p99ms,
    }


def measured(proxy: Any, port: int, duration: int, script: Path | None = None) -> dict[str, Any]:
    """wrk, plus HAProxy's own CPU per request (its worker's utime+stime over the run ÷
    requests): the steadier figure on a shared box, where req/s also measures wrk."""
    pid = proxy.worker_pid()
    before = cpu_seconds(pid)
    out = wrk(port, duration, script)
    if out["requests"]:
        out["haproxy_cpu_us_per_req"] = round(
            (cpu_seconds(pid) - before) / out["requests"] * 1e6, 1
        )
    return out


def _cpu_ratio(base: dict[str, Any], run: dict[str, Any]) -> float | None:
    b, r = base.get("haproxy_cpu_us_per_req"), run.get("haproxy_cpu_us_per_req")
    return round(b / r, 3) if b and r else None


def run(sizes: dict[str, Any], workdir: Path) -> dict[str, Any]:
    keys = hap.shared_keys(workdir)
    dur = sizes["duration"]
    rnd = random.Random(5)
    runs: list[dict[str, Any]] = []
    for n in sizes["sizes"]:
        entries = hap.synthetic_entries(keys, n)
        proxy = hap.start_proxy(workdir / f"h{n}", keys, entries, extra=("plain", "lookup"))
        try:
            picks = rnd.sample(range(n), min(sizes["jwts"], n))
            key_script = hap.wrk_lua(
                workdir / f"keys{n}.lua", "X-Key", [keys.key(hap.identity(i)) for i in picks]
            )
            jwt_script = hap.wrk_lua(
                workdir / f"jwt{n}.lua", "Authorization", [keys.jwt(hap.identity(i)) for i in picks]
            )
            wrk(proxy.port, 2, jwt_script)  # first use of each token: verified, then cached
            base = measured(proxy, proxy.extra_ports["plain"], dur)
            base.update(label="no identity check", kind="plain", identities=None)
            runs.append(base)
            # Baselines driven by the same wrk script (the Lua request builder costs wrk CPU)
            base_k = measured(proxy, proxy.extra_ports["plain"], dur, key_script)
            base_j = measured(proxy, proxy.extra_ports["plain"], dur, jwt_script)
            look = measured(proxy, proxy.extra_ports["lookup"], dur, key_script)
            look.update(label=f"header key → map lookup, {n:,}", kind="lookup", identities=n)
            runs.append(look)
            jw = measured(proxy, proxy.port, dur, jwt_script)
            jw.update(label=f"product: JWT RS256 + lookup, {n:,}", kind="jwt+lookup", identities=n)
            runs.append(jw)
            for r, same in ((look, base_k), (jw, base_j)):
                r["ratio"] = round(r["rps"] / base["rps"], 3) if base["rps"] else None
                r["baseline_same_script_rps"] = same["rps"]
                r["ratio_same_script"] = round(r["rps"] / same["rps"], 3) if same["rps"] else None
                r["cpu_ratio"] = _cpu_ratio(same, r)
                if r["non2xx"]:
                    raise HarnessError(
                        f"{r['label']}: {r['non2xx']} non-2xx responses (setup is wrong)"
                    )
            log(
                f"  request path {n:,}: plain {base['rps']:.0f}/s, lookup {look['rps']:.0f}/s "
                f"({look['ratio']}), jwt+lookup {jw['rps']:.0f}/s ({jw['ratio']}; same-script "
                f"{jw['ratio_same_script']}; HAProxy CPU {jw.get('haproxy_cpu_us_per_req')} vs "
                f"{base_j.get('haproxy_cpu_us_per_req')} us/req, ratio {jw['cpu_ratio']})"
            )
        finally:
            proxy.stop()
        # The product's frontend with identity from a trusted header (no JWT): HMAC pseudonym
        # + shard selection + map lookup + route decision, against its own no-check baseline.
        proxy = hap.start_proxy(
            workdir / f"hh{n}", keys, entries, extra=("plain",), policy=hap.header_policy(keys)
        )
        try:
            hdr_script = hap.wrk_lua(
                workdir / f"hdr{n}.lua", "X-User", [hap.identity(i) for i in picks]
            )
            base2 = measured(proxy, proxy.extra_ports["plain"], dur, hdr_script)
            hd = measured(proxy, proxy.port, dur, hdr_script)
            hd.update(
                label=f"product: header identity + lookup, {n:,}",
                kind="header+lookup",
                identities=n,
                baseline_rps=base2["rps"],
            )
            hd["ratio"] = round(hd["rps"] / base2["rps"], 3) if base2["rps"] else None
            hd["cpu_ratio"] = _cpu_ratio(base2, hd)
            if hd["non2xx"]:
                raise HarnessError(
                    f"{hd['label']}: {hd['non2xx']} non-2xx responses (setup is wrong)"
                )
            runs.append(hd)
            log(
                f"  request path {n:,}: header identity {hd['rps']:.0f}/s ({hd['ratio']} of {base2['rps']:.0f}/s)"
            )
        finally:
            proxy.stop()
    return {
        "runs": runs,
        "method": (
            f"wrk -t2 -c50 -d{dur}s against one HAProxy (the product's rendered config for the demo "
            f"policy, {hap.SHARDS} map shards, request logging on as rendered) with two extra frontends: "
            "*no identity check* returns 200 directly; *header key → map lookup* takes a random "
            "pre-computed pseudonym key from `X-Key` and does the product's shard selection + map lookup "
            "(the pure lookup cost); *product* is the rendered frontend itself: a random pre-minted RS256 "
            f"JWT per request ({sizes['jwts']:,} distinct tokens of random users) → claim checks → "
            "verified-token cache (stick table keyed by SHA-256 of the token; a hit skips jwt_verify) → "
            "HMAC pseudonym → map lookup → route decision; *product: header identity* is the same policy with "
            "`identity.source: header` (X-User from 127.0.0.1), run on a second HAProxy with its own "
            "no-check baseline (its ratio uses that baseline). With a bounded token set, almost every request "
            "hits the verified-token cache after its first use. wrk shares the 2 cores with HAProxy, so "
            "these are ceilings for this box. Ratio = req/s ÷ no-check req/s from the same HAProxy; "
            "*same-script* divides by a no-check run driven by the same wrk Lua script (so wrk does the "
            "same work in both); *CPU ratio* = HAProxy worker CPU per request of that no-check run ÷ the "
            "product's (utime+stime from /proc over each run ÷ requests), the steadier figure on this "
            "shared box. The header-identity run uses its own same-script baseline."
        ),
    }
