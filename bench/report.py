# ruff: noqa: RUF001  (typographic multiplication signs and dashes in the report are on purpose)
"""Targets, charts and docs/benchmarks.md, all generated from latest.json.

python -m bench.report [bench/results/latest.json]   # regenerate without re-running
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from bench import report_scim
from bench.common import RESULTS, ROOT

SCIM_OPS = [
    "create",
    "lookup",
    "deactivate",
    "replace",
    "group_add100",
    "group_remove1",
    "list_page",
]
OP_LABEL = {
    "create": "create user",
    "lookup": "lookup `userName eq`",
    "deactivate": "PATCH deactivate",
    "replace": "PUT replace",
    "group_add100": "add 100 members",
    "group_remove1": "remove 1 member (`members[value eq]`)",
    "list_page": "list page (count=100)",
}
BACKENDS = [*report_scim.DEPLOYED, *report_scim.REFERENCE]
PEER = "scim2-server"


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _ratio(x: Any) -> str:
    return "–" if x is None else f"{x:.2f}×"


# --- targets --------------------------------------------------------------------------------


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    s = result.get("sections", {})
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, value: Any, met: bool | None, note: str = "") -> None:
        out.append({"name": name, "target": target, "value": value, "met": met, "note": note})

    scim = s.get("scim")
    if scim:
        report_scim.targets(scim, add)
    gsc = s.get("group_scaling")
    if gsc:
        for be, r in gsc.get("backends", {}).items():
            v = max(r.get("ratio_add") or 0, r.get("ratio_remove") or 0)
            add(
                f"group scaling {gsc['big']:,} vs {gsc['small']} members ({be})",
                "≤ 2 (ratio of medians)",
                f"add {r.get('ratio_add'):.2f}, remove {r.get('ratio_remove'):.2f}",
                v <= 2 if gsc["big"] >= 100_000 else None,
                "" if gsc["big"] >= 100_000 else "quick run: smaller group",
            )
    prop = s.get("propagation")
    if prop:
        runs = [
            r
            for r in prop.get("runs", [])
            if r["identities"] == 1_000_000 and not r["ryw"] and r["targets"] == 1
        ]
        if runs:
            r0 = runs[0]
            v = r0["p99_ms"]
            shown = f"p99 {v:.1f} ms, p50 {r0['p50_ms']:.1f} ms"
            if r0.get("timeouts"):
                shown = (
                    f"p99 ≥ {v:.0f} ms (poll bound; {r0['timeouts']} of {r0['n']} users not denied "
                    f"within 3 s), p50 {r0['p50_ms']:.0f} ms"
                )
            add("propagation p99 at 1M identities, no read-your-writes", "≤ 5 ms", shown, v <= 5)
        else:
            add(
                "propagation p99 at 1M identities, no read-your-writes",
                "≤ 5 ms",
                None,
                None,
                "not measured in this run",
            )
        st = [r for r in prop.get("stall", []) if r["identities"] == 1_000_000]
        if st:
            v = st[0]["max_ms"]
            add(
                "longest request stall during updates at 1M",
                "≤ 10 ms",
                f"{v:.1f} ms ({st[0]['updates']} updates in {st[0].get('burst_seconds')} s)",
                v <= 10,
            )
        else:
            add(
                "longest request stall during updates at 1M",
                "≤ 10 ms",
                None,
                None,
                "not measured in this run",
            )
    rs = s.get("resync")
    if rs:
        runs = [r for r in rs.get("runs", []) if r["identities"] == 1_000_000]
        if runs:
            v = runs[0]["seconds"]
            add("resync 1M identities", "≤ 3 s", f"{v:.2f} s", v <= 3)
        else:
            add("resync 1M identities", "≤ 3 s", None, None, "not measured in this run")
    rp = s.get("request_path")
    if rp:
        jw = [r for r in rp.get("runs", []) if r.get("kind") == "jwt+lookup"]
        if jw:
            w = min(jw, key=lambda r: r.get("ratio_same_script") or r.get("ratio") or 0)
            v = w.get("ratio_same_script") or w.get("ratio")
            cpu = w.get("cpu_ratio")
            add(
                "JWT (RS256) + lookup vs no check",
                "≥ 0.6×",
                (
                    f"{v:.2f}× req/s at {w['identities']:,} identities"
                    + (f" (HAProxy CPU/request ratio {cpu:.2f}×)" if cpu else "")
                )
                if v
                else None,
                None if v is None else v >= 0.6,
            )
    fp = s.get("footprint")
    if fp:
        v = fp.get("rss_mb")
        add(
            f"scimgate RSS with {fp['users']:,} users, {fp['groups']:,} groups",
            "≤ 200 MB at 100k users",
            f"{v:.0f} MB",
            v <= 200 if fp["users"] >= 100_000 else None,
            "" if fp["users"] >= 100_000 else "quick run: fewer users",
        )
    for name, why in result.get("skipped", {}).items():
        add(f"section {name}", "—", None, None, f"skipped: {why}")
    return out


# --- charts -----------------------------------------------------------------------------------


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _footer(fig: Any, result: dict[str, Any]) -> None:
    env = result.get("env", {})
    m, v = env.get("machine", {}), env.get("versions", {})
    fig.text(
        0.005,
        0.005,
        f"{m.get('cores')}× {m.get('cpu_model')} | Python {v.get('python')} | "
        f"{(v.get('haproxy') or '').replace('HAProxy version ', 'HAProxy ')[:24]} | "
        f"scim2-server {v.get('scim2_server')} | scimgate {str(env.get('commit'))[:10]} | "
        f"{result.get('mode')} run {result.get('generated')}",
        fontsize=6,
        color="#555",
    )


def charts(result: dict[str, Any], out: Path) -> dict[str, str]:
    plt = _plt()
    files: dict[str, str] = {}
    s = result.get("sections", {})
    scim = s.get("scim")
    if scim:
        servers = scim["servers"]
        names = [n for n in [PEER, *BACKENDS] if n in servers]  # as deployed first
        levels = list(servers[names[0]].keys())
        for metric, fname, ylabel in (
            ("total_server_cpu_ms_per_op", "scim_cpu.png", "server CPU ms per op (log)"),
            ("ops_per_s", "scim_throughput.png", "ops/s (log)"),
        ):
            fig, axes = plt.subplots(1, len(levels), figsize=(5.2 * len(levels), 4.6), sharey=True)
            axes = axes if len(levels) > 1 else [axes]
            for ax, conc in zip(axes, levels, strict=True):
                width = 0.8 / len(names)
                for i, n in enumerate(names):
                    vals = [
                        (servers[n].get(conc, {}).get(op) or {}).get(metric) or 0 for op in SCIM_OPS
                    ]
                    ax.bar([x + i * width for x in range(len(SCIM_OPS))], vals, width, label=n)
                ax.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(SCIM_OPS))])
                ax.set_xticklabels(
                    [OP_LABEL[o].replace("`", "") for o in SCIM_OPS],
                    rotation=35,
                    ha="right",
                    fontsize=7,
                )
                ax.set_yscale("log")
                ax.set_title(f"concurrency {conc}")
                ax.grid(axis="y", alpha=0.3)
            axes[0].set_ylabel(ylabel)
            axes[0].legend(fontsize=7)
            fig.suptitle(
                "SCIM operations: "
                + (
                    "server CPU per op (scimgate on PostgreSQL includes PostgreSQL's CPU)"
                    if metric != "ops_per_s"
                    else "throughput"
                ),
                fontsize=10,
            )
            fig.tight_layout(rect=(0, 0.03, 1, 1))
            _footer(fig, result)
            fig.savefig(out / fname, dpi=110)
            plt.close(fig)
            files[fname.split(".")[0]] = fname
    gsc = s.get("group_scaling")
    if gsc:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        labels, vals, colors = [], [], []
        for be, r in gsc["backends"].items():
            for kind in ("add", "remove"):
                for size in ("small", "big"):
                    labels.append(f"{be.replace('scimgate-', '')}\n{kind} {gsc[size]:,}")
                    vals.append(r[size][kind]["p50_ms"])
                    colors.append("#4c72b0" if size == "small" else "#dd8452")
        ax.bar(range(len(vals)), vals, color=colors)
        ax.set_xticks(range(len(vals)))
        ax.set_xticklabels(labels, fontsize=6)
        ax.set_ylabel("median latency ms (one-member PATCH)")
        ax.set_title("Group scaling: one-member PATCH, small vs big group", fontsize=10)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        _footer(fig, result)
        fig.savefig(out / "group_scaling.png", dpi=110)
        plt.close(fig)
        files["group_scaling"] = "group_scaling.png"
    prop = s.get("propagation")
    if prop and prop.get("runs"):
        fig, ax = plt.subplots(figsize=(7, 3.8))
        runs = prop["runs"]
        x = range(len(runs))
        for k, off, c in (
            ("p50_ms", -0.25, "#4c72b0"),
            ("p99_ms", 0, "#dd8452"),
            ("max_ms", 0.25, "#c44e52"),
        ):
            ax.bar(
                [i + off for i in x],
                [r[k] for r in runs],
                0.25,
                label=k.replace("_ms", ""),
                color=c,
            )
        ax.set_xticks(list(x))
        ax.set_xticklabels(
            [
                f"{r['identities']:,}\n{'RYW' if r['ryw'] else 'no RYW'}, {r['targets']} tgt"
                for r in runs
            ],
            fontsize=6,
        )
        ax.set_yscale("log")
        ax.set_ylabel("deactivation response → first 403, ms (log)")
        ax.axhline(5, color="gray", ls="--", lw=0.8)
        ax.legend(fontsize=7)
        ax.set_title("Propagation", fontsize=10)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        _footer(fig, result)
        fig.savefig(out / "propagation.png", dpi=110)
        plt.close(fig)
        files["propagation"] = "propagation.png"
    rsy = s.get("resync")
    if rsy and rsy.get("runs"):
        fig, ax = plt.subplots(1, 2, figsize=(8, 3.6))
        runs = rsy["runs"]
        lab = [f"{r['identities']:,}" for r in runs]
        ax[0].bar(lab, [r["seconds"] for r in runs], color="#4c72b0")
        ax[0].axhline(3, color="gray", ls="--", lw=0.8)
        ax[0].set_ylabel("seconds")
        ax[0].set_title("resync time", fontsize=9)
        w = 0.27
        for i, (k, c) in enumerate(
            (("rss_before_mb", "#8c8c8c"), ("rss_peak_mb", "#c44e52"), ("rss_after_mb", "#dd8452"))
        ):
            ax[1].bar(
                [j + (i - 1) * w for j in range(len(runs))],
                [r.get(k) or 0 for r in runs],
                w,
                label=k[4:-3],
                color=c,
            )
        ax[1].set_xticks(range(len(runs)))
        ax[1].set_xticklabels(lab)
        ax[1].set_ylabel("HAProxy RSS MB")
        ax[1].legend(fontsize=7)
        ax[1].set_title("HAProxy memory", fontsize=9)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        _footer(fig, result)
        fig.savefig(out / "resync.png", dpi=110)
        plt.close(fig)
        files["resync"] = "resync.png"
    rp = s.get("request_path")
    if rp and rp.get("runs"):
        fig, ax = plt.subplots(figsize=(7, 3.6))
        runs = rp["runs"]
        ax.bar(range(len(runs)), [r["rps"] for r in runs], color="#4c72b0")
        ax.set_xticks(range(len(runs)))
        ax.set_xticklabels([r["label"] for r in runs], fontsize=6, rotation=20, ha="right")
        ax.set_ylabel("requests/s (wrk -t2 -c50)")
        ax.set_title("HAProxy request path", fontsize=10)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        _footer(fig, result)
        fig.savefig(out / "request_path.png", dpi=110)
        plt.close(fig)
        files["request_path"] = "request_path.png"
    return files


# --- markdown ---------------------------------------------------------------------------------


def markdown(result: dict[str, Any], files: dict[str, str], img_prefix: str) -> str:
    env = result.get("env", {})
    m, v = env.get("machine", {}), env.get("versions", {})
    s = result.get("sections", {})
    L: list[str] = []
    a = L.append
    a("# scimgate benchmarks")
    a("")
    a(
        f"Generated by `make bench{'-quick' if result.get('mode') == 'quick' else ''}` "
        f"(`python -m bench.run{' --quick' if result.get('mode') == 'quick' else ''}`"
        f"{' --only ' + ','.join(result['only']) if result.get('only') else ''}) from "
        f"`bench/results/latest.json` on {result.get('generated')} ({result.get('mode')} run, "
        f"last invocation {result.get('duration_s')} s). Do not edit by hand: `python -m bench.report` regenerates it."
    )
    a("")
    a("## Machine and versions")
    a("")
    a("| item | value |")
    a("| --- | --- |")
    a(
        f"| machine | {m.get('cores')} cores, {m.get('cpu_model')}, {m.get('mem_gb')} GB RAM, kernel {m.get('kernel')} |"
    )
    a(
        f"| load average at start | {m.get('loadavg_at_start')} (the box is shared; see per-section load averages) |"
    )
    a(f"| Python | {v.get('python')} |")
    a(f"| HAProxy | {v.get('haproxy')} |")
    a(
        f"| scimgate | {v.get('scimgate')} at commit `{env.get('commit')}`{' (worktree had uncommitted changes)' if v.get('scimgate_worktree_dirty') else ''} |"
    )
    a(
        f"| peer | scim2-server {v.get('scim2_server')} (scim2-models {v.get('scim2_models')}), ASGI app + AsyncInMemoryStorage under uvicorn {v.get('uvicorn')} |"
    )
    a(f"| PostgreSQL | {v.get('postgresql')} (throwaway cluster, unix socket, fsync=off) |")
    a(f"| SQLAlchemy / wrk | {v.get('sqlalchemy')} / {v.get('wrk')} |")
    a("")
    loads = [x for sec in s.values() for x in (sec.get("loadavg") or [])]
    busy = max([m.get("loadavg_at_start") or 0, *loads])
    if busy > 0.5 * (m.get("cores") or 1):
        a(
            f"**The machine was shared during this run**: load average up to {busy:.1f} on "
            f"{m.get('cores')} cores (other engineers' test suites ran in parallel). Absolute ms "
            "and ops/s move by tens of percent between runs; read the ratios measured in the same "
            "run and the spreads of the alternating rounds (section 1), not single absolute values."
        )
        a("")
    a("## Targets")
    a("")
    a("| target | goal | measured | status |")
    a("| --- | --- | --- | --- |")
    for t in result.get("targets", []):
        st = "met" if t["met"] is True else ("**missed**" if t["met"] is False else "n/a")
        a(
            f"| {t['name']} | {t['target']} | {t['value'] or '–'} | {st}{' — ' + t['note'] if t['note'] else ''} |"
        )
    if result.get("failures"):
        a("")
        a(
            "**Harness failures in this run:** "
            + "; ".join(f"{k}: {v}" for k, v in result["failures"].items())
        )
    scim = s.get("scim")
    if scim:
        sz = scim["sizes"]
        a("")
        a("## 1. SCIM cost and throughput")
        a("")
        dep = scim.get("deployed", {}).get(report_scim.UP_SQLITE, {})
        a(
            "**As deployed** (`scimgate-up-*` rows): the product exactly as `scimgate up --dir DIR` starts it "
            "(bench/common.py `start_up`: the configuration `up` writes, one local HAProxy target kept in sync "
            f"through the Runtime API, read-your-writes {'on' if dep.get('read_your_writes', True) else 'OFF'}, "
            f"audit chain, SQLite synchronous={dep.get('sqlite_synchronous', 'FULL')} (the product default), "
            f"{dep.get('log_level', 'INFO')} request logs); on PostgreSQL `up` is given the database through "
            "SCIMGATE_DATABASE_URL, as a user would. Requests go to the `scim_url` of stack.json (loopback HTTP). "
            "**Reference** (`scimgate-sqlite`, `scimgate-postgresql`): `scimgate serve` with no HAProxy target "
            "(the test fixture's configuration, synchronous=NORMAL), as the earlier rounds measured it. "
            f"Peer: scim2-server {v.get('scim2_server')}. All in the same run, one server at a time "
            "(peer, as deployed, reference). Load: closed loop, one keep-alive HTTP/1.1 connection per "
            "worker thread (http.client). Each request is sent once; every run is bounded by a request count "
            f"and {sz['time_limit']} s. Sizes: {sz['ops']} creates/lookups/PATCHes/PUTs per level, "
            f"{sz['group_ops']} add-100 PATCHes (each on a fresh empty group), {sz['remove_ops']} removals from a "
            f"{sz['group_size']:,}-member group, {sz['list_ops']} pages. "
            "Server CPU = utime+stime from /proc before/after, divided by successful ops: for `serve` and the peer "
            "the process tree; for `up` the scimgate process alone (its HAProxy child is the *HAProxy ms* column, "
            "not in *CPU/op*), split per thread into the sync engine (`sync-*` threads: followers, recorder, "
            "drainer, housekeeping) and the rest (*API ms*: event loop, request threads, including the change-log "
            "rows each write computes for the engine). For scimgate on PostgreSQL the PostgreSQL cluster's CPU "
            "is added to *CPU/op*. *client CPU* is the load generator's own CPU per op (its share of a core in "
            "parentheses). Ratios are scimgate ÷ scim2-server in the same run (CPU and latency: lower is better; "
            "ops/s: higher is better). The machine is shared with other engineers' test runs: ratios measured "
            "in the same run and the alternating rounds below are the figures to read, not absolute ms."
        )
        a("")
        if "scim_cpu" in files:
            a(f"![SCIM CPU per op]({img_prefix}{files['scim_cpu']})")
            a("")
            a(f"![SCIM throughput]({img_prefix}{files['scim_throughput']})")
            a("")
        L.extend(report_scim.tables(scim, SCIM_OPS, OP_LABEL))
        a(
            f"Load average during the section: {scim.get('loadavg')}; section time {scim.get('seconds')} s."
        )
    gsc = s.get("group_scaling")
    if gsc:
        a("")
        a("## 2. Group scaling")
        a("")
        a(
            f"One-member PATCH add and remove (`members[value eq …]`) on a {gsc['big']:,}-member group vs a "
            f"{gsc['small']}-member group, {gsc['ops']} ops each at concurrency 1. The big group's users and "
            "memberships are bulk-inserted into `scim_users`/`scim_members` in setup (SQLAlchemy Core)."
        )
        a("")
        a(
            "| backend | op | small p50 ms | big p50 ms | ratio of medians | small CPU/op ms | big CPU/op ms |"
        )
        a("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for be, r in gsc["backends"].items():
            for kind in ("add", "remove"):
                a(
                    f"| {be} | {kind} | {_f(r['small'][kind]['p50_ms'])} | {_f(r['big'][kind]['p50_ms'])} | "
                    f"{_ratio(r['ratio_' + kind])} | {_f(r['small'][kind]['total_server_cpu_ms_per_op'])} | "
                    f"{_f(r['big'][kind]['total_server_cpu_ms_per_op'])} |"
                )
        if "group_scaling" in files:
            a("")
            a(f"![group scaling]({img_prefix}{files['group_scaling']})")
    prop = s.get("propagation")
    if prop:
        a("")
        a("## 3. Propagation")
        a("")
        a(prop.get("method", ""))
        a("")
        a(
            "| identities | read-your-writes | targets | users | p50 ms | p99 ms | max ms | SCIM PATCH p50 ms |"
        )
        a("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in prop.get("runs", []):
            a(
                f"| {r['identities']:,} | {'yes' if r['ryw'] else 'no'} | {r['targets']} | {r['n']} | {_f(r['p50_ms'])} | "
                f"{_f(r['p99_ms'])} | {_f(r['max_ms'])} | {_f(r.get('patch_p50_ms'))} |"
            )
        if prop.get("stall"):
            a("")
            a(
                "Longest request stall (probe: one keep-alive GET every ~1 ms during a burst of deactivations):"
            )
            a("")
            a("| identities | updates | probe requests | p99 ms | max ms | idle max ms |")
            a("| ---: | ---: | ---: | ---: | ---: | ---: |")
            for r in prop["stall"]:
                a(
                    f"| {r['identities']:,} | {r['updates']} | {r['probes']} | {_f(r['p99_ms'])} | {_f(r['max_ms'])} | {_f(r.get('idle_max_ms'))} |"
                )
        if "propagation" in files:
            a("")
            a(f"![propagation]({img_prefix}{files['propagation']})")
    rsy = s.get("resync")
    if rsy:
        a("")
        a("## 4. Resync")
        a("")
        a(rsy.get("method", ""))
        a("")
        a(
            "| identities | shards | seconds | HAProxy RSS before MB | peak MB | after MB | entries verified |"
        )
        a("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for r in rsy["runs"]:
            a(
                f"| {r['identities']:,} | {r.get('shards')} | {_f(r['seconds'])} | {_f(r['rss_before_mb'])} | "
                f"{_f(r.get('rss_peak_mb'))} | {_f(r['rss_after_mb'])} | {r.get('verified')} |"
            )
        if "resync" in files:
            a("")
            a(f"![resync]({img_prefix}{files['resync']})")
    rp = s.get("request_path")
    if rp:
        a("")
        a("## 5. Request path (HAProxy)")
        a("")
        a(rp.get("method", ""))
        a("")
        a(
            "| frontend | identities | requests/s | ratio to no check | ratio, same wrk script "
            "| HAProxy CPU µs/request | CPU ratio | non-2xx |"
        )
        a("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rp["runs"]:
            a(
                f"| {r['label']} | {_f(r.get('identities'))} | {_f(r['rps'])} | {_ratio(r.get('ratio'))} | "
                f"{_ratio(r.get('ratio_same_script'))} | {_f(r.get('haproxy_cpu_us_per_req'))} | "
                f"{_ratio(r.get('cpu_ratio'))} | {_f(r.get('non2xx'))} |"
            )
        if "request_path" in files:
            a("")
            a(f"![request path]({img_prefix}{files['request_path']})")
    fp = s.get("footprint")
    if fp:
        a("")
        a("## 6. Footprint")
        a("")
        a(fp.get("method", ""))
        a("")
        a("| users | groups | memberships | VmRSS idle MB | VmRSS after traffic MB | VmHWM MB |")
        a("| ---: | ---: | ---: | ---: | ---: | ---: |")
        a(
            f"| {fp['users']:,} | {fp['groups']:,} | {fp.get('memberships', 0):,} | {_f(fp.get('rss_idle_mb'))} | {_f(fp['rss_mb'])} | {_f(fp.get('hwm_mb'))} |"
        )
    analysis = ROOT / "bench" / "analysis.md"
    if analysis.exists() and result.get("mode") == "full":
        a("")
        a(analysis.read_text().strip())
    if result.get("notes"):
        a("")
        a("## Notes")
        a("")
        for n in result["notes"]:
            a(f"* {n}")
    a("")
    a("## Reproduce")
    a("")
    a("```")
    a(
        "make bench          # full run, ≤ 15 min on 2 cores: bench/results/latest.json, PNGs, docs/benchmarks.md"
    )
    a("make bench-quick    # CI smoke run, ≤ 2 min: bench/results/quick/ (never asserts timings)")
    a("# or by hand:")
    a(".venv/bin/pip install -e '.[bench]'")
    a(
        ".venv/bin/python -m bench.run [--quick] [--only scim,group_scaling,resync,request_path,propagation,footprint]"
    )
    a(".venv/bin/python -m bench.report   # re-render this page from latest.json")
    a("```")
    a("")
    a(
        "Needs haproxy (2.6 from Debian 12), wrk and PostgreSQL 15 binaries (`make system-deps`). Everything binds "
        "to 127.0.0.1 or unix sockets; every load loop is bounded by a count and a deadline."
    )
    a("")
    return "\n".join(L)


def write_all(result: dict[str, Any], out: Path, doc: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files = charts(result, out)
    prefix = os.path.relpath(out, doc.parent).replace(os.sep, "/") + "/"
    if prefix == "./":
        prefix = ""
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(markdown(result, files, prefix))


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "latest.json"
    res = json.loads(path.read_text())
    res["targets"] = targets(res)
    doc = (
        ROOT / "docs" / "benchmarks.md" if path.parent == RESULTS else path.parent / "benchmarks.md"
    )
    write_all(res, path.parent, doc)
    print(f"wrote {doc}")
