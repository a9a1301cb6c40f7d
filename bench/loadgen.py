"""Closed-loop HTTP load: N worker threads, one keep-alive connection each (http.client).

Every run is bounded by the number of requests AND a wall-clock deadline. The load
generator's own CPU (this process, os.times) is reported next to the server's.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import HarnessError, pct, self_cpu


@dataclass
class Req:
    method: str
    path: str
    body: bytes | None = None
    expect: tuple[int, ...] = (200,)


@dataclass
class LoadResult:
    ops: int
    errors: int
    wall: float
    latencies: list[float]  # seconds, successful requests only
    client_cpu: float
    server_cpu: float
    server_extra_cpu: float
    error_samples: list[str] = field(default_factory=list)
    timed_out: bool = False
    # Named extra CPU readings over the run (seconds), e.g. the sync engine's threads
    # ("sync", part of server_cpu) and HAProxy ("haproxy", not part of it).
    probe_cpu: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ok = len(self.latencies)
        ms = [x * 1000 for x in self.latencies]
        return {
            "ops": self.ops,
            "ok": ok,
            "errors": self.errors,
            "error_samples": self.error_samples[:3],
            "timed_out": self.timed_out,
            "wall_s": round(self.wall, 3),
            "ops_per_s": round(ok / self.wall, 1) if self.wall > 0 else None,
            "p50_ms": _r(pct(ms, 50)),
            "p95_ms": _r(pct(ms, 95)),
            "p99_ms": _r(pct(ms, 99)),
            "max_ms": _r(max(ms) if ms else None),
            "server_cpu_ms_per_op": _r(self.server_cpu * 1000 / ok) if ok else None,
            "db_cpu_ms_per_op": _r(self.server_extra_cpu * 1000 / ok) if ok else None,
            "total_server_cpu_ms_per_op": _r((self.server_cpu + self.server_extra_cpu) * 1000 / ok)
            if ok
            else None,
            "client_cpu_ms_per_op": _r(self.client_cpu * 1000 / ok) if ok else None,
            "client_cpu_util": round(self.client_cpu / self.wall, 3) if self.wall > 0 else None,
            **self._probe_summary(ok),
        }

    def _probe_summary(self, ok: int) -> dict[str, Any]:
        if not ok or not self.probe_cpu:
            return {}
        out = {f"{k}_cpu_ms_per_op": _r(v * 1000 / ok) for k, v in self.probe_cpu.items()}
        if "sync" in self.probe_cpu:
            # The server process's CPU minus its sync-engine threads: the API's share.
            out["api_cpu_ms_per_op"] = _r((self.server_cpu - self.probe_cpu["sync"]) * 1000 / ok)
        return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class Conn:
    """One keep-alive connection; reconnects if the server closed it."""

    def __init__(self, host: str, port: int, headers: dict[str, str], timeout: float = 60) -> None:
        self.host, self.port, self.headers, self.timeout = host, port, headers, timeout
        self.c: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        h = self.headers if headers is None else {**self.headers, **headers}
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                data = r.read()
                if r.will_close:
                    self.c.close()
                    self.c = None
                return r.status, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.c.close()
                self.c = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.c is not None:
            self.c.close()
            self.c = None


def run_load(
    host: str,
    port: int,
    headers: dict[str, str],
    reqs: Sequence[Req],
    concurrency: int,
    *,
    time_limit: float,
    server_cpu: Callable[[], float],
    extra_cpu: Callable[[], float] = lambda: 0.0,
    bodies: list[bytes | None] | None = None,
    warm_path: str | None = None,
    probes: Mapping[str, Callable[[], float]] | None = None,
) -> LoadResult:
    """Send every request in `reqs` (each exactly once, in order of pickup) with
    `concurrency` workers; stop early at `time_limit` seconds. With `bodies` (a list as
    long as `reqs`), successful response bodies are stored at their request's index."""
    lock = threading.Lock()
    nxt = [0]
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errs: list[str] = []
    conns = [Conn(host, port, headers) for _ in range(concurrency)]
    # Warm the connections (TCP handshake outside the measurement).
    if warm_path:
        for c in conns:
            c.request("GET", warm_path)
    stop_at = [0.0]
    timed_out = [False]

    def worker(i: int) -> None:
        c = conns[i]
        mine = lat[i]
        while True:
            with lock:
                k = nxt[0]
                if k >= len(reqs):
                    return
                if time.perf_counter() > stop_at[0]:
                    timed_out[0] = True
                    return
                nxt[0] = k + 1
            q = reqs[k]
            t0 = time.perf_counter()
            try:
                status, data = c.request(q.method, q.path, q.body)
            except Exception as exc:
                with lock:
                    errs.append(f"{q.method} {q.path}: {exc!r}")
                continue
            dt = time.perf_counter() - t0
            if status in q.expect:
                mine.append(dt)
                if bodies is not None:
                    bodies[k] = data
            else:
                with lock:
                    errs.append(f"{q.method} {q.path[:80]} -> {status} {data[:160]!r}")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    probes = dict(probes or {})
    p0 = {k: f() for k, f in probes.items()}
    s0, x0, c0 = server_cpu(), extra_cpu(), self_cpu()
    t0 = time.perf_counter()
    stop_at[0] = t0 + time_limit
    for t in threads:
        t.start()
    for t in threads:
        t.join(time_limit + 120)
        if t.is_alive():
            raise HarnessError("a load worker did not finish (request hung for > 120 s)")
    wall = time.perf_counter() - t0
    c1, s1, x1 = self_cpu(), server_cpu(), extra_cpu()
    p1 = {k: f() for k, f in probes.items()}
    for c in conns:
        c.close()
    all_lat = [x for xs in lat for x in xs]
    return LoadResult(
        ops=nxt[0],
        errors=len(errs),
        wall=wall,
        latencies=all_lat,
        client_cpu=c1 - c0,
        server_cpu=s1 - s0,
        server_extra_cpu=x1 - x0,
        error_samples=errs[:5],
        timed_out=timed_out[0],
        probe_cpu={k: p1[k] - p0[k] for k in probes},
    )
