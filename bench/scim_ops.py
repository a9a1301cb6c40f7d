"""Section 1: SCIM cost and throughput, scimgate (SQLite, PostgreSQL) vs scim2-server 0.8.3.

Operations (each request is sent exactly once; distinct targets per request):
  create      POST /Users (a realistic IdP payload)
  lookup      GET /Users?filter=userName eq "…"   (what IdPs send before every create)
  deactivate  PATCH /Users/{id}  replace active=false
  replace     PUT /Users/{id}
  group_add100  PATCH /Groups/{id} add 100 members (a fresh empty group per request)
  group_remove1 PATCH /Groups/{id} remove path members[value eq "…"] from a 2,000-member group
  list_page   GET /Users?startIndex=…&count=100
"""

from __future__ import annotations

import json
import random
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.common import HarnessError, Server, log, start_peer, start_scimgate
from bench.loadgen import LoadResult, Req, run_load

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCHOP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

OPS = ["create", "lookup", "deactivate", "replace", "group_add100", "group_remove1", "list_page"]
OP_LABEL = {
    "create": "create user",
    "lookup": "lookup userName eq",
    "deactivate": "PATCH deactivate",
    "replace": "PUT replace",
    "group_add100": "add 100 members",
    "group_remove1": "remove 1 member (big group)",
    "list_page": "list page (100)",
}
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def user_body(name: str, *, active: bool = True, title: str = "Engineer") -> bytes:
    given, family = name.split(".", 1) if "." in name else (name, "Bench")
    return json.dumps(
        {
            "schemas": [USER],
            "userName": f"{name}@example.com",
            "externalId": f"ext-{name}",
            "name": {"givenName": given, "familyName": family},
            "displayName": f"{given} {family}",
            "title": title,
            "active": active,
            "emails": [{"value": f"{name}@example.com", "type": "work", "primary": True}],
        }
    ).encode()


def patch(ops: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemas": [PATCHOP], "Operations": ops}).encode()


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class Client:
    """Setup traffic (not measured): parallel requests that return parsed bodies."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv

    def many(self, reqs: list[Req], conc: int = 8, limit: float = 300) -> list[Any]:
        bodies: list[bytes | None] = [None] * len(reqs)
        res = run_load(
            self.srv.host,
            self.srv.port,
            self.srv.headers(),
            reqs,
            conc,
            time_limit=limit,
            server_cpu=lambda: 0.0,
            bodies=bodies,
        )
        if res.errors or res.timed_out:
            raise HarnessError(
                f"{self.srv.name} setup failed: {res.error_samples[:2]} timed_out={res.timed_out}"
            )
        return [json.loads(b) if b else None for b in bodies]

    def users(self, names: list[str]) -> list[str]:
        """Setup via /Bulk, 100 creates per request (both servers support it)."""
        p = self.srv.prefix
        reqs = []
        for i in range(0, len(names), 100):
            ops = [
                {
                    "method": "POST",
                    "path": "/Users",
                    "bulkId": f"b{j}",
                    "data": json.loads(user_body(n)),
                }
                for j, n in enumerate(names[i : i + 100])
            ]
            reqs.append(
                Req(
                    "POST", f"{p}/Bulk", json.dumps({"schemas": [BULK], "Operations": ops}).encode()
                )
            )
        ids = []
        for out in self.many(reqs, conc=2):
            for op in out["Operations"]:
                if str(op.get("status")) != "201":
                    raise HarnessError(f"{self.srv.name}: bulk create failed: {op}")
                ids.append(op["location"].rsplit("/", 1)[1])
        return ids

    def groups(self, names: list[str]) -> list[str]:
        p = self.srv.prefix
        out = self.many(
            [
                Req(
                    "POST",
                    f"{p}/Groups",
                    json.dumps({"schemas": [GROUP], "displayName": n}).encode(),
                    (201,),
                )
                for n in names
            ]
        )
        return [o["id"] for o in out]

    def fill_group(self, gid: str, member_ids: list[str]) -> None:
        p = self.srv.prefix
        reqs = [
            Req(
                "PATCH",
                f"{p}/Groups/{gid}",
                patch(
                    [
                        {
                            "op": "add",
                            "path": "members",
                            "value": [{"value": m} for m in member_ids[i : i + 100]],
                        }
                    ]
                ),
                (200, 204),
            )
            for i in range(0, len(member_ids), 100)
        ]
        self.many(reqs, conc=1)


def measure(srv: Server, reqs: list[Req], conc: int, limit: float) -> dict[str, Any]:
    res: LoadResult = run_load(
        srv.host,
        srv.port,
        srv.headers(),
        reqs,
        conc,
        time_limit=limit,
        server_cpu=srv.cpu,
        extra_cpu=srv.extra_cpu,
        warm_path=f"{srv.prefix}/ServiceProviderConfig",
        probes=srv.probes(),
    )
    out = res.summary()
    if out["ok"] == 0 or out["errors"] > max(2, 0.02 * out["ops"]):
        raise HarnessError(
            f"{srv.name}: {out['errors']} errors of {out['ops']}: {out['error_samples']}"
        )
    return out


def bench_server(srv: Server, sizes: dict[str, Any], tag: str) -> dict[str, Any]:
    rnd = random.Random(7)
    cli = Client(srv)
    p = srv.prefix
    t0 = time.monotonic()
    group_size = sizes["group_size"]
    pool = cli.users([f"pool{i:05d}.{tag}" for i in range(group_size)])
    log(f"  {srv.name}: {len(pool)} pool users in {time.monotonic() - t0:.1f}s")
    out: dict[str, Any] = {}
    n, ng, nr, limit = sizes["ops"], sizes["group_ops"], sizes["remove_ops"], sizes["time_limit"]
    nl = sizes["list_ops"]
    for conc in sizes["concurrency"]:
        res: dict[str, Any] = {}
        # Setup for this level (not measured): empty groups and one 2,000-member group.
        empties = cli.groups([f"g-add-c{conc}-{i}" for i in range(ng)])
        big = cli.groups([f"g-big-c{conc}"])[0]
        cli.fill_group(big, pool)
        names = [f"u{conc}x{i:05d}.{tag}" for i in range(n)]
        bodies: list[bytes | None] = [None] * n
        res["create"] = r = run_load(
            srv.host,
            srv.port,
            srv.headers(),
            [Req("POST", f"{p}/Users", user_body(nm), (201,)) for nm in names],
            conc,
            time_limit=limit,
            server_cpu=srv.cpu,
            extra_cpu=srv.extra_cpu,
            bodies=bodies,
            warm_path=f"{p}/ServiceProviderConfig",
            probes=srv.probes(),
        ).summary()
        if r["ok"] == 0 or r["errors"] > max(2, 0.02 * r["ops"]):
            raise HarnessError(f"{srv.name} create: {r['error_samples']}")
        ids = [json.loads(b)["id"] for b in bodies if b]
        created = [nm for nm, b in zip(names, bodies, strict=True) if b]
        look = created[:]
        rnd.shuffle(look)
        res["lookup"] = measure(
            srv,
            [
                Req("GET", f"{p}/Users?filter=" + q(f'userName eq "{nm}@example.com"'))
                for nm in look
            ],
            conc,
            limit,
        )
        res["deactivate"] = measure(
            srv,
            [
                Req(
                    "PATCH",
                    f"{p}/Users/{i}",
                    patch([{"op": "replace", "path": "active", "value": False}]),
                    (200, 204),
                )
                for i in ids
            ],
            conc,
            limit,
        )
        res["replace"] = measure(
            srv,
            [
                Req("PUT", f"{p}/Users/{i}", user_body(nm, title="Manager"))
                for i, nm in zip(ids, created, strict=True)
            ],
            conc,
            limit,
        )
        hundred = pool[:100]
        add_body = patch(
            [{"op": "add", "path": "members", "value": [{"value": m} for m in hundred]}]
        )
        res["group_add100"] = measure(
            srv,
            [Req("PATCH", f"{p}/Groups/{g}", add_body, (200, 204)) for g in empties],
            conc,
            limit,
        )
        victims = rnd.sample(pool, nr)
        res["group_remove1"] = measure(
            srv,
            [
                Req(
                    "PATCH",
                    f"{p}/Groups/{big}",
                    patch([{"op": "remove", "path": f'members[value eq "{v}"]'}]),
                    (200, 204),
                )
                for v in victims
            ],
            conc,
            limit,
        )
        total = group_size + len(ids) * (1 + list(sizes["concurrency"]).index(conc))
        starts = [rnd.randint(1, max(1, total - 100)) for _ in range(nl)]
        res["list_page"] = measure(
            srv, [Req("GET", f"{p}/Users?startIndex={s}&count=100") for s in starts], conc, limit
        )
        out[str(conc)] = res
        log(
            f"  {srv.name} c={conc}: "
            + ", ".join(
                f"{k} {v['ops_per_s']}/s cpu {v['total_server_cpu_ms_per_op']}ms"
                for k, v in res.items()
            )
        )
    return out


# Row names. "up" rows are the product as deployed (`scimgate up`: one HAProxy target kept in
# sync, read-your-writes, audit); the plain names are `scimgate serve` with no target, kept as
# the reference the earlier rounds measured.
UP_SQLITE, UP_PG = "scimgate-up-sqlite", "scimgate-up-postgresql"
SERVE_SQLITE, SERVE_PG = "scimgate-sqlite", "scimgate-postgresql"


def _one(results: dict[str, Any], srv: Server, sizes: dict[str, Any], tag: str) -> None:
    try:
        results["servers"][srv.name] = bench_server(srv, sizes, tag)
    finally:
        srv.stop()


def run(sizes: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from bench.common import start_postgres, start_up, stop_postgres

    results: dict[str, Any] = {"sizes": sizes, "servers": {}, "deployed": {}}
    # One server at a time, alternating the peer's neighbours: peer, as deployed, reference.
    d = Path(tempfile.mkdtemp(prefix="peer-", dir=workdir))
    _one(results, start_peer(d), sizes, "p")
    from scimgate.config import default_sqlite_url

    backends = sizes.get("backends", ["sqlite", "postgresql"])
    deployed = sizes.get("deployed", backends)
    if "sqlite" in deployed:
        d = Path(tempfile.mkdtemp(prefix="up-sqlite-", dir=workdir))
        srv, info = start_up(d, UP_SQLITE)
        results["deployed"][UP_SQLITE] = _stack_facts(info, d / "up")
        _one(results, srv, sizes, "u")
    if "sqlite" in backends:
        d = Path(tempfile.mkdtemp(prefix="sg-sqlite-", dir=workdir))
        _one(results, start_scimgate(d, default_sqlite_url(d), SERVE_SQLITE), sizes, "s")
    if "postgresql" in backends or "postgresql" in deployed:
        pg = start_postgres()
        try:
            assert pg.proc is not None
            if "postgresql" in deployed:
                d = Path(tempfile.mkdtemp(prefix="up-pg-", dir=workdir))
                srv, info = start_up(
                    d, UP_PG, database_url=pg.create_database(), extra_pids=[pg.proc.pid]
                )
                results["deployed"][UP_PG] = _stack_facts(info, d / "up")
                _one(results, srv, sizes, "v")
            if "postgresql" in backends:
                d = Path(tempfile.mkdtemp(prefix="sg-pg-", dir=workdir))
                srv = start_scimgate(d, pg.create_database(), SERVE_PG, extra_pids=[pg.proc.pid])
                _one(results, srv, sizes, "g")
        finally:
            stop_postgres(pg)
    results["ratios"] = ratios(results["servers"])
    if sizes.get("spread_rounds") and "sqlite" in deployed:
        results["spread"] = spread(sizes, workdir)
    return results


SPREAD_OPS = ("create", "lookup", "deactivate")


def _three(srv: Server, n: int, tag: str, conc: int, limit: float) -> dict[str, Any]:
    """create, lookup, deactivate of ``n`` fresh users on one server (one round)."""
    p = srv.prefix
    names = [f"{tag}{i:05d}.spread" for i in range(n)]
    bodies: list[bytes | None] = [None] * n
    r = run_load(
        srv.host, srv.port, srv.headers(),
        [Req("POST", f"{p}/Users", user_body(nm), (201,)) for nm in names], conc,
        time_limit=limit, server_cpu=srv.cpu, extra_cpu=srv.extra_cpu, bodies=bodies,
        warm_path=f"{p}/ServiceProviderConfig", probes=srv.probes(),
    ).summary()  # fmt: skip
    if r["ok"] == 0 or r["errors"] > max(2, 0.02 * r["ops"]):
        raise HarnessError(f"{srv.name} create: {r['error_samples']}")
    ids = [json.loads(b)["id"] for b in bodies if b]
    eq = [Req("GET", f"{p}/Users?filter=" + q(f'userName eq "{nm}@example.com"')) for nm in names]
    off = patch([{"op": "replace", "path": "active", "value": False}])
    return {
        "create": r,
        "lookup": measure(srv, eq, conc, limit),
        "deactivate": measure(
            srv, [Req("PATCH", f"{p}/Users/{i}", off, (200, 204)) for i in ids], conc, limit
        ),
    }


def spread(sizes: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """The SQLite target ratios again, in alternating rounds with both servers running (peer
    then product, product then peer, ...), so that the shared machine's drift shows as a
    spread instead of hiding in one number. Each round uses fresh users."""
    from bench.common import start_up

    rounds, n, conc = sizes["spread_rounds"], sizes["spread_ops"], 8
    limit = sizes["time_limit"]
    peer = start_peer(Path(tempfile.mkdtemp(prefix="spread-peer-", dir=workdir)))
    try:
        up, _ = start_up(Path(tempfile.mkdtemp(prefix="spread-up-", dir=workdir)), UP_SQLITE)
        try:
            runs: list[dict[str, Any]] = []
            for k in range(rounds):
                order = [(peer, "p"), (up, "u")] if k % 2 == 0 else [(up, "u"), (peer, "p")]
                got = {srv.name: _three(srv, n, f"r{k}{t}", conc, limit) for srv, t in order}
                runs.append(got)
                log(
                    f"  spread round {k + 1}/{rounds}: "
                    + ", ".join(
                        f"{op} {got[UP_SQLITE][op]['total_server_cpu_ms_per_op']}/"
                        f"{got['scim2-server'][op]['total_server_cpu_ms_per_op']} ms"
                        for op in SPREAD_OPS
                    )
                )
        finally:
            up.stop()
    finally:
        peer.stop()
    out: dict[str, Any] = {"rounds": rounds, "ops_per_round": n, "concurrency": conc, "ops": {}}
    for op in SPREAD_OPS:
        mine = [r[UP_SQLITE][op] for r in runs]
        theirs = [r["scim2-server"][op] for r in runs]
        out["ops"][op] = {
            "ratio_cpu": [
                round(a["total_server_cpu_ms_per_op"] / b["total_server_cpu_ms_per_op"], 3)
                for a, b in zip(mine, theirs, strict=True)
                if a["total_server_cpu_ms_per_op"] and b["total_server_cpu_ms_per_op"]
            ],
            "up_cpu_ms": [a["total_server_cpu_ms_per_op"] for a in mine],
            "up_sync_cpu_ms": [a.get("sync_cpu_ms_per_op") for a in mine],
            "up_api_cpu_ms": [a.get("api_cpu_ms_per_op") for a in mine],
            "peer_cpu_ms": [b["total_server_cpu_ms_per_op"] for b in theirs],
            "up_ops_per_s": [a["ops_per_s"] for a in mine],
            "peer_ops_per_s": [b["ops_per_s"] for b in theirs],
        }
    return out


def _stack_facts(info: dict[str, Any], directory: Path) -> dict[str, Any]:
    """What `scimgate up` started (its stack.json and the scimgate.yaml it wrote), recorded
    next to the numbers so that the report shows the configuration that was measured."""
    from scimgate.config import load_settings

    st = load_settings(directory=directory)
    return {
        "processes": sorted(info.get("pids", {})),
        "haproxy_url": info.get("haproxy_url"),
        "database": st.database_url.split(":", 1)[0],
        "read_your_writes": st.read_your_writes,
        "sqlite_synchronous": st.sqlite_synchronous,
        "log_level": st.log_level,
        "targets_in_yaml": len(st.targets),
    }


METRICS = [
    "ops_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "server_cpu_ms_per_op",
    "total_server_cpu_ms_per_op",
]


def ratios(servers: dict[str, Any]) -> dict[str, Any]:
    peer = servers.get("scim2-server", {})
    out: dict[str, Any] = {}
    for name, levels in servers.items():
        if name == "scim2-server":
            continue
        out[name] = {}
        for conc, ops in levels.items():
            out[name][conc] = {}
            for op, m in ops.items():
                pm = peer.get(conc, {}).get(op)
                if not pm:
                    continue
                # The peer has no database process: its total CPU is its own CPU.
                out[name][conc][op] = {
                    k: (round(m[k] / pm[k], 4) if m.get(k) and pm.get(k) else None) for k in METRICS
                }
    return out


if __name__ == "__main__":  # a quick manual run
    import sys

    quick = "--quick" in sys.argv
    sz = {
        "concurrency": [1, 8],
        "ops": 100,
        "group_ops": 20,
        "remove_ops": 40,
        "list_ops": 20,
        "group_size": 2000,
        "time_limit": 10,
    }
    with tempfile.TemporaryDirectory() as t:
        r = run(sz, Path(t))
    print(json.dumps(r["ratios"], indent=1)[:3000])
