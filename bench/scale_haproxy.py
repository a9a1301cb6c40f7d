"""HAProxy scale bench: full atomic resync at 100k/1M identities, single-update latency at 1M
with 1/16/256 map shards, request stalls during a burst of single updates, and the
per-request cost of the shard rules (wrk).

    python -m bench.scale_haproxy [--quick] [--out PATH]

Standalone and bounded: starts its own HAProxy (``-db``, loopback and a unix socket only) in
a temp dir, with a minimal config whose lookup is the one ``policy/render.py`` renders
(``set-var(txn.scimgate_groups) var(txn.scimgate_key),map(<shard>) if { var(...) -m beg X }``;
the key comes from an ``X-Key`` header instead of an HMAC of a JWT claim), and a SQLite store
holding the desired entries. Results go to ``bench/results/scale_haproxy.json``.

``bench/run.py`` can call it as a section: ``from bench import scale_haproxy`` then
``scale_haproxy.run(quick=..., workdir=...)`` returns the result dict (``main`` also writes it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "scale_haproxy.json"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
WRK = shutil.which("wrk")
VALUES = (",", ",eng,", ",admins,eng,", ",ops,", ",admins,", ",eng,ops,sre,")
V_KEY, V_GROUPS = "txn.scimgate_key", "txn.scimgate_groups"


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def summary_ms(xs: list[float]) -> dict[str, float]:
    return {
        "n": len(xs),
        "p50_ms": round(pct(xs, 50) * 1e3, 3),
        "p99_ms": round(pct(xs, 99) * 1e3, 3),
        "max_ms": round(max(xs) * 1e3, 3),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1000, 1)
    return 0.0


def make_keys(n: int) -> list[str]:
    return [hashlib.sha256(i.to_bytes(8, "big")).hexdigest().upper() for i in range(n)]


# --------------------------------------------------------------------------- store


def make_store(d: Path, keys: list[str]) -> Any:
    """A SQLite store with map_entries = keys (values cycle through VALUES), head seq 1."""
    import sqlite3

    from scimgate.store import tables
    from scimgate.store.db import Database

    d.mkdir(parents=True, exist_ok=True)
    path = d / "store.sqlite"
    db = Database(f"sqlite:///{path}", sqlite_synchronous="OFF")
    tables.metadata.create_all(db.engine)
    from scimgate.audit.log import ensure_head

    with db.write() as conn:
        ensure_head(conn)
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA synchronous=OFF")
    raw.executemany(
        "INSERT INTO map_entries (identity_key, value, user_id) VALUES (?, ?, ?)",
        ((k, VALUES[i % len(VALUES)], f"u{i}") for i, k in enumerate(keys)),
    )
    raw.execute(
        "INSERT INTO change_log (identity_key, value, user_id, deprovision, created) "
        "VALUES (?, ?, 'u0', 0, '2026-01-01T00:00:00.000000Z')",
        (keys[0], VALUES[0]),
    )
    raw.commit()
    raw.close()
    return db


# --------------------------------------------------------------------------- HAProxy


def lookup_rules(map_dir: Path, shards: int) -> list[str]:
    """The identity lookup exactly as policy/render.py renders it (overlay first)."""
    from scimgate.policy.compiler import OVERLAY_MAP_NAME, map_file_name

    overlay = f"http-request set-var({V_GROUPS}) var({V_KEY}),map({map_dir}/{OVERLAY_MAP_NAME})"
    guard = f"!{{ var({V_GROUPS}) -m found }}"
    if shards == 1:
        return [
            overlay,
            f"http-request set-var({V_GROUPS}) var({V_KEY}),map({map_dir}/identities.map) if {guard}",
        ]
    width = 1 if shards == 16 else 2
    return [overlay] + [
        f"http-request set-var({V_GROUPS}) var({V_KEY}),map({map_dir}/{map_file_name(s, shards)}) "
        f"if {{ var({V_KEY}) -m beg {s:0{width}X} }} {guard}"
        for s in range(shards)
    ]


class HAProxy:
    def __init__(self, d: Path, shards: int) -> None:
        from scimgate.policy.compiler import OVERLAY_MAP_NAME, map_file_names

        self.dir, self.shards = d, shards
        d.mkdir(parents=True, exist_ok=True)
        self.map_dir = d / "maps"
        self.map_dir.mkdir(exist_ok=True)
        for name in [*map_file_names(shards), OVERLAY_MAP_NAME]:
            (self.map_dir / name).write_text("")
        self.port, self.plain_port = free_port(), free_port()
        self.admin = d / "admin.sock"
        rules = "\n".join(f"    {r}" for r in lookup_rules(self.map_dir, shards))
        cfg = f"""global
    stats socket unix@{self.admin} mode 600 level admin
    stats timeout 1h
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe_lookup
    bind 127.0.0.1:{self.port}
    http-request set-var({V_KEY}) req.fhdr(x-key)
{rules}
    http-request deny deny_status 403 unless {{ var({V_GROUPS}) -m found }}
    http-request return status 200 content-type text/plain string ok
frontend fe_plain
    bind 127.0.0.1:{self.plain_port}
    http-request return status 200 content-type text/plain string ok
"""
        (d / "haproxy.cfg").write_text(cfg)
        self.proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(d / "haproxy.cfg")],
            stdout=open(d / "haproxy.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {(d / 'haproxy.log').read_text()[-2000:]}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.admin))
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self) -> Any:
        from scimgate.haproxy import RuntimeClient
        from scimgate.sync.apply import ENTRY_VALIDATOR  # the sync engine's allow-lists

        return RuntimeClient(f"unix:{self.admin}", timeout=120, validator=ENTRY_VALIDATOR)

    def layout(self) -> Any:
        from scimgate.sync.layout import MapLayout

        return MapLayout(str(self.map_dir), self.shards)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Http:
    """One keep-alive HTTP/1.1 connection (tiny fixed-size responses)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def status(self, key: str) -> int:
        self.sock.sendall(f"GET / HTTP/1.1\r\nHost: b\r\nX-Key: {key}\r\n\r\n".encode())
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = self.buf[:end].decode()
                m = re.search(r"(?i)content-length: *(\d+)", head)
                total = end + 4 + (int(m.group(1)) if m else 0)
                if len(self.buf) >= total:
                    self.buf = self.buf[total:]
                    return int(head.split(" ", 2)[1])
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


# The probe runs in its own process (no GIL sharing with the updater): keep-alive GETs about
# every 1 ms; one "start_monotonic latency" line per request.
PROBE = r"""
import os, socket, sys, time
port, key, seconds, out = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(6, 1, 1)
req = f"GET / HTTP/1.1\r\nHost: p\r\nX-Key: {key}\r\n\r\n".encode()
rows = []; end = time.monotonic() + seconds; buf = b""
while True:
    t = time.monotonic()
    if t > end or os.path.exists(out + ".stop"): break
    s.sendall(req)
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0 and len(buf) >= i + 6:
            ok = buf[9:12] == b"200"; buf = buf[i + 6:]; break
        buf += s.recv(4096)
    rows.append(f"{t:.6f} {time.monotonic() - t:.6f} {int(ok)}")
    time.sleep(max(0.0, 0.001 - (time.monotonic() - t)))
open(out, "w").write("\n".join(rows))
"""


def read_probe(out: Path, t0: float, t1: float) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while not out.exists() or not out.stat().st_size:
        if time.monotonic() > deadline:
            raise RuntimeError("probe wrote nothing")
        time.sleep(0.05)
    time.sleep(0.05)
    rows = [ln.split() for ln in out.read_text().splitlines()]
    idle = [float(r[1]) for r in rows if float(r[0]) < t0]
    during = [float(r[1]) for r in rows if t0 <= float(r[0]) <= t1]
    bad = sum(1 for r in rows if r[2] != "1")
    res: dict[str, Any] = {"requests_during": len(during), "non_200": bad}
    if during:
        res.update(
            {
                "during_p50_ms": round(pct(during, 50) * 1e3, 3),
                "during_p99_ms": round(pct(during, 99) * 1e3, 3),
                "during_max_ms": round(max(during) * 1e3, 3),
            }
        )
    if idle:
        res.update(
            {
                "idle_p99_ms": round(pct(idle, 99) * 1e3, 3),
                "idle_max_ms": round(max(idle) * 1e3, 3),
            }
        )
    return res


# --------------------------------------------------------------------------- measurements


def measure_resync(db: Any, hx: HAProxy, client: Any, n: int) -> dict[str, Any]:
    """One full resync as the engine does it (reconcile.full_resync, no map files), with the
    split taken from replace_map's own timings when it reports them."""
    from scimgate.sync import reconcile, state
    from scimgate.sync.apply import valid_entries

    layout = hx.layout()
    rss_before = rss_mb(hx.pid)
    # the split, stage by stage (same work full_resync does)
    t = time.perf_counter()
    snap = state.read_snapshot(db)
    t_snapshot = time.perf_counter() - t
    t = time.perf_counter()
    entries, _ = valid_entries(snap.entries, client.validator)
    t_filter = time.perf_counter() - t
    del entries, snap
    # end to end
    t = time.perf_counter()
    res = reconcile.full_resync(db, client, layout, "bench", "bench")
    total = time.perf_counter() - t
    rss_after = rss_mb(hx.pid)
    got = sum(client.map_info(p).entry_cnt for p in layout.paths)
    if got != n or res.entries != n:
        raise RuntimeError(f"resync of {n}: HAProxy holds {got}, resync says {res.entries}")
    out: dict[str, Any] = {
        "total_s": round(total, 3),
        "snapshot_s": round(t_snapshot, 3),
        "filter_s": round(t_filter, 3),
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after,
        "load": load(),
    }
    timings = getattr(client, "last_replace_timings", None)
    if isinstance(timings, Mapping):
        out.update({f"{k}_s": round(v, 3) for k, v in timings.items()})
    return out


def measure_old_split(db: Any, hx: HAProxy, client: Any) -> dict[str, float]:
    """Validation and chunking cost of the pre-change replace_map path (validator.entries +
    build_payload_chunks), measured separately."""
    from scimgate.haproxy.payload import build_payload_chunks
    from scimgate.sync import state

    layout = hx.layout()
    snap = state.read_snapshot(db)
    t = time.perf_counter()
    per_shard = [client.validator.entries(e) for e in layout.split(snap.entries)]
    t_val = time.perf_counter() - t
    t = time.perf_counter()
    for path, pairs in zip(layout.paths, per_shard, strict=True):
        build_payload_chunks(1, client.validator.map_path(path), pairs)
    t_chunk = time.perf_counter() - t
    return {"validate_s": round(t_val, 3), "chunk_s": round(t_chunk, 3)}


def measure_mapfiles(db: Any, hx: HAProxy) -> dict[str, Any]:
    from scimgate.sync import state
    from scimgate.sync.mapfiles import MapFileWriter

    snap = state.read_snapshot(db)
    writer = MapFileWriter(hx.layout())
    t = time.perf_counter()
    writer.write(snap)
    first = time.perf_counter() - t
    t = time.perf_counter()
    writer.write(snap)  # same seq: should be skipped
    again = time.perf_counter() - t
    fresh = MapFileWriter(hx.layout())  # a restarted engine, files already current
    t = time.perf_counter()
    fresh.write(snap)
    restart = time.perf_counter() - t
    return {
        "write_s": round(first, 3),
        "same_seq_s": round(again, 4),
        "fresh_writer_same_state_s": round(restart, 3),
        "load": load(),
    }


def measure_updates(hx: HAProxy, client: Any, keys: list[str], ops: int) -> dict[str, Any]:
    """Single upserts (existing key: set; new key: set miss + add) and deletes, one per round
    trip, as the engine sends them; propagation = del sent -> first 403 on a keep-alive
    connection (the very next request after the CLI ack)."""
    layout = hx.layout()
    rng = random.Random(7)
    sample = rng.sample(keys, ops)
    web = Http(hx.port)
    upd, new, dele, prop = [], [], [], []
    allowed_after_ack: list[str] = []
    for k in sample:
        t = time.perf_counter()
        client.upsert_map(layout.path_of(k), k, ",bench,")
        upd.append(time.perf_counter() - t)
    for k in sample:
        path = layout.path_of(k)
        t = time.perf_counter()
        client.del_map(path, k)
        dele.append(time.perf_counter() - t)
        if web.status(k) != 403:
            allowed_after_ack.append(k)  # a finding, recorded (seen once at 1M, 1 shard)
        prop.append(time.perf_counter() - t)
    for k in sample:  # re-add through the upsert path (set misses, then add)
        t = time.perf_counter()
        client.upsert_map(layout.path_of(k), k, ",")
        new.append(time.perf_counter() - t)
        if len(new) <= 5 and web.status(k) != 200:
            raise RuntimeError("re-added key not allowed")
    web.close()
    return {
        "upsert_existing": summary_ms(upd),
        "upsert_new": summary_ms(new),
        "delete": summary_ms(dele),
        "delete_propagation": summary_ms(prop),
        "allowed_after_delete_ack": len(allowed_after_ack),
        "load": load(),
    }


def measure_stall(hx: HAProxy, client: Any, keys: list[str], d: Path) -> dict[str, Any]:
    """A probe doing keep-alive GETs every ~1 ms while 200 single updates run back to back."""
    layout = hx.layout()
    rng = random.Random(11)
    burst = rng.sample(keys, 200)
    probe_key = keys[-1]
    out = d / f"probe-{time.monotonic_ns()}.txt"
    seconds = 120.0  # upper bound; stopped by the .stop file
    out_proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, str(hx.port), probe_key, str(seconds), str(out)]
    )
    time.sleep(1.0)
    t0 = time.monotonic()
    for i, k in enumerate(burst):
        client.upsert_map(layout.path_of(k), k, VALUES[i % len(VALUES)])
    t1 = time.monotonic()
    time.sleep(0.3)
    Path(f"{out}.stop").touch()
    out_proc.wait(seconds + 30)
    res = read_probe(out, t0, t1)
    res.update({"updates": len(burst), "burst_s": round(t1 - t0, 3), "load": load()})
    return res


WRK_LUA = """
local keys = {%s}
math.randomseed(%d)
request = function()
  return wrk.format("GET", "/", {["X-Key"] = keys[math.random(#keys)]})
end
"""


def run_wrk(port: int, script: Path | None, seconds: int = 5) -> dict[str, Any]:
    assert WRK
    cmd = [WRK, "-t2", "-c50", f"-d{seconds}s"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": float(m.group(1)) if m else 0.0, "non_2xx": int(bad.group(1)) if bad else 0}


# --------------------------------------------------------------------------- driver


SECTIONS = ("resync", "mapfiles", "updates", "stall", "wrk", "oneshard")


def run(
    quick: bool = False, workdir: Path | None = None, sections: tuple[str, ...] = SECTIONS
) -> dict[str, Any]:
    sizes = [10_000, 100_000] if quick else [100_000, 1_000_000]
    big = sizes[-1]
    ops = 100 if quick else 150
    reps = 1 if quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="scale-hap-", dir=workdir))
    results: dict[str, Any] = {
        "haproxy": subprocess.run(
            [HAPROXY, "-v"], capture_output=True, text=True
        ).stdout.splitlines()[0],
        "cpus": os.cpu_count(),
        "quick": quick,
        "load_start": load(),
        "resync": {},
        "map_files": {},
        "updates": {},
        "stall": {},
        "wrk": {},
    }
    try:
        all_keys = make_keys(big)
        log(f"keys ready ({big:,})")
        # ---- resync at each size, 16 shards (the 2.6 default before this work)
        for n in sizes:
            keys = all_keys[:n]
            db = make_store(tmp / f"db{n}", keys)
            for shards in (16, 256) if n == big else (16,):
                if n == big and shards == 256 and not {"updates", "stall", "wrk"} & set(sections):
                    continue
                hx = HAProxy(tmp / f"hx{n}-{shards}", shards)
                try:
                    with hx.client() as client:
                        runs = []
                        for r in range(
                            reps + 1 if "resync" in sections else 1
                        ):  # run 0 loads empty maps; then over full
                            res = measure_resync(db, hx, client, n)
                            res["over"] = "empty" if r == 0 else "full"
                            runs.append(res)
                            log(f"resync {n:,} shards={shards} over {res['over']}: {res}")
                        full = [x for x in runs if x["over"] == "full"]
                        med = sorted(full, key=lambda x: x["total_s"])[len(full) // 2]
                        entry: dict[str, Any] = {"median_over_full": med, "runs": runs}
                        if os.environ.get("SCALE_OLD_SPLIT"):
                            entry["old_split"] = measure_old_split(db, hx, client)
                        results["resync"][f"{n}/{shards}"] = entry
                        if shards == 16 and "mapfiles" in sections:
                            mf = measure_mapfiles(db, hx)
                            results["map_files"][str(n)] = mf
                            log(f"map files {n:,}: {mf}")
                        if n == big and "updates" in sections:
                            u = measure_updates(hx, client, keys, ops)
                            results["updates"][str(shards)] = u
                            log(f"updates at {n:,} shards={shards}: {u}")
                        if n == big and "stall" in sections:
                            s = measure_stall(hx, client, keys, tmp)
                            results["stall"][str(shards)] = s
                            log(f"stall at {n:,} shards={shards}: {s}")
                        if n == big and "wrk" in sections and WRK:
                            results["wrk"][str(shards)] = wrk_section(hx, keys, tmp, reps)
                            log(f"wrk shards={shards}: {results['wrk'][str(shards)]}")
                finally:
                    hx.stop()
                _save(results)
            db.dispose()
        # ---- 1 shard at the big size: updates only (the unsharded 2.6 cost)
        if "oneshard" not in sections:
            return results
        keys = all_keys
        hx = HAProxy(tmp / "hx1", 1)
        try:
            db = make_store(tmp / "db1s", keys)
            with hx.client() as client:
                res = measure_resync(db, hx, client, big)
                log(f"resync {big:,} shards=1: {res}")
                results["resync"][f"{big}/1"] = {"median_over_full": res, "runs": [res]}
                u = measure_updates(hx, client, keys, 100)
                results["updates"]["1"] = u
                log(f"updates at {big:,} shards=1: {u}")
                s1 = measure_stall(hx, client, keys, tmp)
                results["stall"]["1"] = s1
                log(f"stall at {big:,} shards=1: {s1}")
                if WRK:
                    results["wrk"]["1"] = wrk_section(hx, keys, tmp, 1)
                    log(f"wrk shards=1: {results['wrk']['1']}")
            db.dispose()
        finally:
            hx.stop()
    finally:
        results["load_end"] = load()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def wrk_section(hx: HAProxy, keys: list[str], d: Path, reps: int) -> dict[str, Any]:
    rng = random.Random(5)
    subset = rng.sample(keys, 10_000)
    script = d / f"keys-{hx.shards}.lua"
    script.write_text(WRK_LUA % (",".join(f'"{k}"' for k in subset), 42))
    lookup, plain = [], []
    for _ in range(reps):
        plain.append(run_wrk(hx.plain_port, None))
        lookup.append(run_wrk(hx.port, script))
    return {
        "lookup_rps_median": statistics.median(x["rps"] for x in lookup),
        "plain_rps_median": statistics.median(x["rps"] for x in plain),
        "lookup_non_2xx": sum(x["non_2xx"] for x in lookup),
        "lookup_runs": [x["rps"] for x in lookup],
        "plain_runs": [x["rps"] for x in plain],
        "load": load(),
    }


_OUT: list[Path] = [RESULTS]


def _save(results: dict[str, Any]) -> None:
    path = _OUT[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k/100k instead of 100k/1M")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"subset of {SECTIONS}")
    args = ap.parse_args(argv)
    _OUT[0] = args.out
    sections = tuple(x for x in args.sections.split(",") if x)
    if not set(sections) <= set(SECTIONS):
        ap.error(f"--sections: choose from {SECTIONS}")
    results = run(quick=args.quick, sections=sections)
    _save(results)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
