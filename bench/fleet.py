"""Fleet benchmarks (docs/fleet.md, "Sizing"), run by hand (not part of `make bench`):

python -m bench.fleet propagation [--deprovisions 40]
    `scimgate up --nodes 3 --replicas 2` in a scratch dir; for each deprovision: time from
    the SCIM PATCH's start to its answer, and to the first 403 on *every* node (three
    pollers, one per node, started with the PATCH). Prints p50/p99.

python -m bench.fleet followers [--agents 50] [--seconds 20] [--writes-per-second 10]
    One PostgreSQL (a throwaway cluster); 50 followers doing what an agent does to the
    database (``store.outbox.ChangeLogReader`` every 0.2 s and after each NOTIFY through
    ``store.changefeed.ChangeWakeups``, a ``store.nodes.beat`` every second and after each
    batch), without HAProxy, while a writer logs changes at the given rate through
    ``Database.write``. Prints the PostgreSQL server's CPU (all its processes, from /proc)
    and its transactions per second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def propagation(deprovisions: int) -> dict[str, Any]:
    from scimgate.policy.jwtmint import mint_jwt
    from scimgate.policy.model import load_policy

    root = Path(tempfile.mkdtemp(prefix="scimgate-bfleet-"))
    root.chmod(0o755)
    directory = root / "f"
    env = {k: v for k, v in os.environ.items() if k != "SCIMGATE_DATABASE_URL"}
    with open(root / "up.log", "ab") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "scimgate.cli", "up", "--dir", str(directory), "--nodes", "3",
             "--replicas", "2", "--port", str(_free_port()), "--haproxy-port", str(_free_port())],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (directory / "stack.json").exists():
            if up.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((root / "up.log").read_text()[-3000:])
            time.sleep(0.2)
        info = json.loads((directory / "stack.json").read_text())
        jwt_cfg = load_policy(info["policy_file"]).identity.jwt
        assert jwt_cfg is not None
        key = Path(info["jwt_private_key"]).read_text()
        headers = {
            "Authorization": f"Bearer {info['token']}",
            "Content-Type": "application/scim+json",
        }
        answered: list[float] = []
        everywhere: list[float] = []
        allowed_after_answer = 0  # requests sent after the PATCH's answer and still allowed
        with httpx.Client(base_url=info["scim_url"], headers=headers, timeout=30) as scim:
            for i in range(deprovisions):
                email = f"bench-{i}-{os.getpid()}@example.com"
                body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": email,
                        "emails": [{"value": email, "primary": True}]}  # fmt: skip
                uid = scim.post("/Users", json=body).json()["id"]
                jwt = mint_jwt(key, subject_claim=jwt_cfg.claim, identity=email,
                               algorithm=jwt_cfg.algorithm, issuer=jwt_cfg.issuer,
                               audience=jwt_cfg.audience)  # fmt: skip
                denied_at: list[float] = []
                allowed_sent: list[float] = []  # send times of requests answered 200
                start = threading.Event()

                def poll(url: str, jwt: str = jwt, denied_at: list[float] = denied_at,
                         start: threading.Event = start,
                         allowed_sent: list[float] = allowed_sent) -> None:  # fmt: skip
                    with httpx.Client(timeout=5) as c:
                        start.wait()
                        for _ in range(5000):  # bounded
                            if (
                                c.get(
                                    url + "/", headers={"Authorization": f"Bearer {jwt}"}
                                ).status_code
                                == 403
                            ):
                                denied_at.append(time.perf_counter())
                                return

                pollers = [
                    threading.Thread(target=poll, args=(n["haproxy_url"],)) for n in info["nodes"]
                ]
                for t in pollers:
                    t.start()
                patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                         "Operations": [{"op": "replace", "path": "active", "value": False}]}  # fmt: skip
                t0 = time.perf_counter()
                start.set()
                assert scim.patch(f"/Users/{uid}", json=patch).status_code == 200
                answer = time.perf_counter()
                answered.append(answer - t0)
                for t in pollers:
                    t.join(30)
                allowed_after_answer += sum(1 for sent in allowed_sent if sent > answer)
                assert len(denied_at) == len(info["nodes"])
                everywhere.append(max(denied_at) - t0)
        return {
            "nodes": len(info["nodes"]), "deprovisions": deprovisions,
            "answer_ms": {"p50": round(_pct(answered, 0.5) * 1000, 1),
                          "p99": round(_pct(answered, 0.99) * 1000, 1)},
            "first_403_on_every_node_ms": {"p50": round(_pct(everywhere, 0.5) * 1000, 1),
                                           "p99": round(_pct(everywhere, 0.99) * 1000, 1),
                                           "mean": round(statistics.mean(everywhere) * 1000, 1)},
            "requests_allowed_after_the_answer": allowed_after_answer,
        }  # fmt: skip
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        shutil.rmtree(root, ignore_errors=True)


def _cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _cluster_pids(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, walwriter, ...): this cluster only."""
    out = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                out.append(int(entry.name))
    return out


def followers(agents: int, seconds: float, writes_per_second: float) -> dict[str, Any]:
    from scimgate.instance.pg_cluster import LocalCluster
    from scimgate.store import migrate, nodes, tables
    from scimgate.store.changefeed import ChangeWakeups
    from scimgate.store.db import Database, log_committed
    from scimgate.store.outbox import ChangeLogReader, MapChange

    root = Path(tempfile.mkdtemp(prefix="scimgate-bfol-"))
    root.chmod(0o755)
    cluster = LocalCluster(root / "pg")
    cluster.start()
    stop = threading.Event()
    try:
        postmaster = cluster.pid
        assert postmaster is not None
        db = Database(cluster.url)
        migrate.upgrade(db)
        applied = [0] * agents

        def agent(i: int) -> None:
            own = Database(cluster.url)
            reader, wakeups = ChangeLogReader(own), ChangeWakeups(own)
            cursor, next_beat = 0, 0.0
            try:
                while not stop.is_set():
                    rows = reader.read(cursor, 5000)
                    if rows:
                        cursor = rows[-1].change.seq
                        applied[i] = cursor
                    now = time.monotonic()
                    if rows or now >= next_beat:
                        nodes.beat(
                            own, nodes.NodeBeat(f"bench{i}", cursor, None, None, True, False, None)
                        )
                        next_beat = now + 1.0
                    wakeups.wait(0.2)
            finally:
                wakeups.close()
                reader.close()
                own.dispose()

        threads = [threading.Thread(target=agent, args=(i,), daemon=True) for i in range(agents)]
        for t in threads:
            t.start()
        time.sleep(3)  # connections and first beats
        # Backends live as long as their connections (the followers'), so the set is stable;
        # a backend that ends during the window loses its CPU from the sum (a small undercount).
        pids = _cluster_pids(postmaster)
        cpu0, t0 = _cpu_seconds(pids), time.monotonic()
        with db.engine.connect() as conn:
            x0 = conn.exec_driver_sql(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).scalar_one()
        written = 0
        interval = 1.0 / writes_per_second if writes_per_second > 0 else seconds
        while time.monotonic() - t0 < seconds:
            with db.write() as conn:
                seq = conn.execute(
                    tables.change_log.insert().returning(tables.change_log.c.seq),
                    {"identity_key": f"{written:064X}", "value": ",a,", "user_id": None,
                     "deprovision": False, "created": "2026-01-01T00:00:00.000000Z"},
                ).scalar_one()  # fmt: skip
                log_committed(conn, [MapChange(int(seq), f"{written:064X}", ",a,", None, False)])
            written += 1
            time.sleep(interval)
        elapsed = time.monotonic() - t0
        cpu = _cpu_seconds(pids) - cpu0
        with db.engine.connect() as conn:
            x1 = conn.exec_driver_sql(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).scalar_one()
            conns = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            ).scalar_one()
        stop.set()
        for t in threads:
            t.join(10)
        db.dispose()
        return {
            "agents": agents, "seconds": round(elapsed, 1), "writes": written,
            "postgres_cpu_percent_of_one_core": round(100 * cpu / elapsed, 1),
            "transactions_per_second": round((x1 - x0) / elapsed),
            "connections": int(conns),
            "agents_caught_up": sum(1 for a in applied if a >= written - 1),
        }  # fmt: skip
    finally:
        stop.set()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("propagation")
    p.add_argument("--deprovisions", type=int, default=40)
    f = sub.add_parser("followers")
    f.add_argument("--agents", type=int, default=50)
    f.add_argument("--seconds", type=float, default=20.0)
    f.add_argument("--writes-per-second", type=float, default=10.0)
    args = parser.parse_args()
    if args.what == "propagation":
        result = propagation(args.deprovisions)
    else:
        result = followers(args.agents, args.seconds, args.writes_per_second)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
