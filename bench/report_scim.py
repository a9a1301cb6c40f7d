# ruff: noqa: RUF001  (typographic multiplication signs and dashes in the report are on purpose)
"""The SCIM section's targets and tables: the product as deployed (`scimgate up`) and the
`serve`-without-target reference, each against scim2-server measured in the same run."""

from __future__ import annotations

from collections.abc import Callable
from statistics import median
from typing import Any

PEER = "scim2-server"
UP_SQLITE, UP_PG = "scimgate-up-sqlite", "scimgate-up-postgresql"
SERVE_SQLITE, SERVE_PG = "scimgate-sqlite", "scimgate-postgresql"
DEPLOYED = [UP_SQLITE, UP_PG]
REFERENCE = [SERVE_SQLITE, SERVE_PG]
LABEL = {
    UP_SQLITE: "as deployed, SQLite",
    UP_PG: "as deployed, PostgreSQL",
    SERVE_SQLITE: "serve without target, SQLite",
    SERVE_PG: "serve without target, PostgreSQL",
}
# The same-backend reference of each deployed row (the whole cost of keeping HAProxy in sync
# is the difference, API side included).
REFERENCE_OF = {UP_SQLITE: SERVE_SQLITE, UP_PG: SERVE_PG}
CHANGES = ("create", "deactivate", "replace")  # one identity-map change per request
JUDGED = "8"  # the load: 8 connections
SYNC_TARGET_MS = 0.5

Add = Callable[[str, str, Any, "bool | None", str], None]


def _cpu(servers: dict[str, Any], name: str, conc: str, op: str, key: str) -> float | None:
    v = ((servers.get(name, {}).get(conc) or {}).get(op) or {}).get(key)
    return float(v) if v is not None else None


def _spread(scim: dict[str, Any], op: str) -> str:
    sp = (scim.get("spread") or {}).get("ops", {}).get(op)
    if not sp or not sp.get("ratio_cpu"):
        return ""
    xs = sp["ratio_cpu"]
    return f" [alternating rounds: median {median(xs):.2f}×, {min(xs):.2f}–{max(xs):.2f}]"


def targets(scim: dict[str, Any], add: Add) -> None:
    servers, rat = scim["servers"], scim.get("ratios", {})
    levels = list(servers.get(PEER, {}))
    judged = JUDGED if JUDGED in levels else (levels[0] if levels else JUDGED)
    for be in DEPLOYED:
        if judged not in servers.get(be, {}):
            continue
        per = {op: _cpu(servers, be, judged, op, "sync_cpu_ms_per_op") for op in CHANGES}
        vals = [v for v in per.values() if v is not None]
        if not vals:
            continue
        ref = REFERENCE_OF[be]
        whole = []
        for op in CHANGES:
            a = _cpu(servers, be, judged, op, "total_server_cpu_ms_per_op")
            b = _cpu(servers, ref, judged, op, "total_server_cpu_ms_per_op")
            if a is not None and b is not None:
                whole.append(f"{op} {a - b:+.2f}")
        sp = (scim.get("spread") or {}).get("ops", {}) if be == UP_SQLITE else {}
        rounds = [
            x
            for op in ("create", "deactivate")
            for x in (sp.get(op, {}).get("up_sync_cpu_ms") or [])
        ]
        add(
            f"sync engine CPU per change, {judged} writers ({LABEL[be]})",
            f"≤ {SYNC_TARGET_MS} ms",
            ", ".join(f"{op} {v:.2f}" for op, v in per.items() if v is not None)
            + " ms (`sync-*` threads)"
            + (f"; alternating rounds {min(rounds):.2f}–{max(rounds):.2f} ms" if rounds else "")
            + (
                f"; whole cost of keeping HAProxy in sync (minus `serve` without target): "
                f"{', '.join(whole)} ms"
                if whole
                else ""
            ),
            max(vals) <= SYNC_TARGET_MS if scim["sizes"]["ops"] >= 100 else None,
            "" if scim["sizes"]["ops"] >= 100 else "quick run: too few ops for 10 ms CPU ticks",
        )
    for be in DEPLOYED + REFERENCE:
        if be not in rat:
            continue
        per = []
        for conc, ops in rat[be].items():
            for op in ("create", "lookup", "deactivate"):
                v = (ops.get(op) or {}).get("total_server_cpu_ms_per_op")
                if v is not None:
                    per.append((v, op, conc))
        at = [(v, op) for v, op, conc in per if conc == judged]
        if not at:
            continue
        worst_all = max(per)
        shown = f"c={judged}: " + ", ".join(
            f"{op} {v:.2f}×{_spread(scim, op) if be == UP_SQLITE else ''}" for v, op in at
        )
        shown += f"; worst at any level {worst_all[0]:.2f}× ({worst_all[1]} c={worst_all[2]})"
        add(
            f"server CPU/op create, lookup, PATCH vs peer ({LABEL[be]})",
            "≤ 0.33× scim2-server",
            shown,
            max(v for v, _ in at) <= 1 / 3,
            "" if be == UP_SQLITE else "the issue's target is on SQLite as deployed",
        )
    gs = scim.get("sizes", {}).get("group_size")
    for be in DEPLOYED + REFERENCE:
        vals = []
        for conc in servers.get(be, {}):
            mine = _cpu(servers, be, conc, "group_remove1", "total_server_cpu_ms_per_op")
            theirs = _cpu(servers, PEER, conc, "group_remove1", "total_server_cpu_ms_per_op")
            if mine and theirs:
                vals.append((theirs / mine, conc))
        if vals:
            v, conc = min(vals)
            add(
                f"remove 1 member from a {gs:,}-member group vs peer ({LABEL[be]})",
                "≥ 100× cheaper (CPU/op)",
                f"worst {v:.0f}× cheaper (c={conc}); "
                + ", ".join(f"c={c} {x:.0f}×" for x, c in vals),
                v >= 100 if gs == 2000 else None,
                "" if gs == 2000 else "quick run: small group, not comparable",
            )


def _f(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        return f"{x:.2f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _ratio(x: Any) -> str:
    return "–" if x is None else f"{x:.2f}×"


def tables(scim: dict[str, Any], ops: list[str], op_label: dict[str, str]) -> list[str]:
    """Per concurrency level: the as-deployed table, then the reference table."""
    L: list[str] = []
    a = L.append
    servers = scim["servers"]
    for conc in servers.get(PEER, next(iter(servers.values()))):
        for title, names, deployed in (
            ("as deployed (`scimgate up`)", DEPLOYED, True),
            ("reference: `scimgate serve` without a target", REFERENCE, False),
        ):
            if not any(n in servers for n in names):
                continue
            a(f"### concurrency {conc}: {title}")
            a("")
            extra = " API ms | sync ms | PostgreSQL ms | HAProxy ms |" if deployed else ""
            a(
                "| operation | server | ops/s | p50 ms | p99 ms | CPU/op ms |"
                + extra
                + " client CPU/op ms | ratio ops/s | ratio p99 | ratio CPU/op |"
            )
            a("| --- | --- |" + " ---: |" * (10 + (4 if deployed else 0) - 2))
            for op in ops:
                for n in [PEER, *names]:
                    r = servers.get(n, {}).get(conc, {}).get(op)
                    if not r:
                        continue
                    rr = scim.get("ratios", {}).get(n, {}).get(conc, {}).get(op, {})
                    err = f" ({r['errors']} err)" if r.get("errors") else ""
                    cells = [
                        op_label[op], n + err, _f(r["ops_per_s"]), _f(r["p50_ms"]),
                        _f(r["p99_ms"]), _f(r["total_server_cpu_ms_per_op"]),
                    ]  # fmt: skip
                    if deployed:
                        cells += [
                            _f(r.get("api_cpu_ms_per_op")),
                            _f(r.get("sync_cpu_ms_per_op")),
                            _f(r.get("db_cpu_ms_per_op")) if "postgresql" in n else "–",
                            _f(r.get("haproxy_cpu_ms_per_op")),
                        ]
                    cells += [
                        f"{_f(r['client_cpu_ms_per_op'])} ({_f(r['client_cpu_util'])})",
                        _ratio(rr.get("ops_per_s")),
                        _ratio(rr.get("p99_ms")),
                        _ratio(rr.get("total_server_cpu_ms_per_op")),
                    ]
                    a("| " + " | ".join(cells) + " |")
            a("")
    sp = scim.get("spread")
    if sp:
        a(
            f"### Alternating rounds (SQLite as deployed vs scim2-server, c={sp['concurrency']}, "
            f"{sp['ops_per_round']} fresh users per round, {sp['rounds']} rounds, both servers up)"
        )
        a("")
        a(
            "| operation | CPU/op ratio per round | median | as deployed CPU/op ms | of which sync ms "
            "| scim2-server CPU/op ms |"
        )
        a("| --- | --- | ---: | --- | --- | --- |")
        for op, d in sp["ops"].items():
            xs = d["ratio_cpu"]
            a(
                f"| {op_label[op]} | {', '.join(f'{x:.2f}×' for x in xs)} | "
                f"{_ratio(median(xs) if xs else None)} | {', '.join(_f(x) for x in d['up_cpu_ms'])} | "
                f"{', '.join(_f(x) for x in d['up_sync_cpu_ms'])} | "
                f"{', '.join(_f(x) for x in d['peer_cpu_ms'])} |"
            )
        a("")
    return L
