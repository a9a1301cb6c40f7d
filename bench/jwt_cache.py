"""The verified-token cache's effect on HAProxy's request rate: ``python -m bench.jwt_cache``.

Starts HAProxy (the real binary, on free 127.0.0.1 ports, configs rendered by scimgate) once per
variant and drives it with ``wrk -t2 -c50 -d5s`` over loopback:

* ``baseline``: the same global/defaults, a frontend that only answers 200 (no checks);
* ``jwt-nocache``: the rendered RS256 policy with ``verified_cache: {enabled: false}``;
* ``jwt-cache``: the rendered policy with the cache on (the default).

Each variant runs twice: ``fixed`` (one token on every request) and ``pool`` (a wrk Lua
script picks one of ``--tokens`` distinct tokens, one per user in the identities map, at
random). The JWT runs include the map lookup (every token's user is in the map) and the log
line, so the ratio to the baseline is the "JWT + lookup vs no check" figure. Bounded: every
run is ``--duration`` seconds (at most 10), every process is stopped by its PID, and nothing
listens beyond 127.0.0.1. Any non-200 answer, or a cache that does not hold the expected
entries afterwards, is an error (exit 1).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from scimgate.policy import (
    Policy,
    entries_for_user,
    map_file_names,
    parse_policy,
    render_config,
)
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair, mint_jwt

ISSUER = "https://idp.example.com/"
AUDIENCE = "scimgate-demo"
SECRET = b"bench-pseudonym-secret-0123456789"
TABLE = "scimgate_jwt_cache"
USER_HEADER = "X-User"
CLK_TCK = os.sysconf("SC_CLK_TCK")
VARIANTS = {
    "baseline": "no checks: the same global/defaults, a frontend that only answers 200",
    "header": "the full rendered pipeline, identity from a trusted header (no JWT) + map lookup",
    "jwt-nocache": "RS256 jwt_verify on every request + claim checks + map lookup",
    "jwt-cache": "the same with the verified-token cache (the default)",
}

LUA = """\
local values = {
%s
}
local n = #values
local seeded = false
request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1000000))
    seeded = true
  end
  return wrk.format("GET", "/", {["Host"] = "app.example.com",
    ["%s"] = "%s" .. values[math.random(n)]})
end
"""


class BenchError(RuntimeError):
    pass


@dataclass
class Run:
    variant: str
    mode: str  # fixed | pool
    rps: float
    requests: int
    haproxy_cpu_us_per_req: float  # user+sys of the HAProxy process over the wrk run
    non_2xx: int
    socket_errors: str
    table_entries: int | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(sock: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(sock))
        s.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _table_entries(sock: Path) -> int | None:
    head = _cli(sock, f"show table {TABLE}").splitlines()
    m = re.search(r"used:(\d+)", head[0]) if head else None
    return int(m.group(1)) if m else None


class HAProxy:
    def __init__(self, haproxy: str, cfg: Path, port: int) -> None:
        check = subprocess.run(
            [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise BenchError(f"haproxy -c failed for {cfg}:\n{check.stdout}{check.stderr}")
        self.port = port
        self.stderr = (cfg.parent / f"{cfg.stem}.err").open("w")
        # the per-request log lines go to stdout: discard them (same cost in every variant)
        self.proc = subprocess.Popen(
            [haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=self.stderr
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"haproxy exited: {Path(self.stderr.name).read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BenchError("haproxy did not start")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads

    def status(self, header: tuple[str, str]) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/",
            headers={"Host": "app.example.com", header[0]: header[1]},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by PID
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def _wrk(
    wrk: str, port: int, duration: int, header: tuple[str, str], lua: Path | None
) -> tuple[float, int, int, str]:
    args = [wrk, "-t2", "-c50", f"-d{duration}s"]
    if lua is not None:
        args += ["-s", str(lua)]
    else:
        args += ["-H", "Host: app.example.com", "-H", f"{header[0]}: {header[1]}"]
    out = subprocess.run(
        [*args, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=duration + 30,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or total is None:
        raise BenchError(f"unexpected wrk output:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:(.*)", out)
    return (
        float(rps.group(1)),
        int(total.group(1)),
        int(non_2xx.group(1)) if non_2xx else 0,
        errors.group(1).strip() if errors else "",
    )


def _policy(pub_path: Path, cache: bool, header: bool = False) -> Policy:
    text = demo_policy_yaml(public_key=str(pub_path), issuer=ISSUER, audience=AUDIENCE)
    if header:
        text = text.replace(
            "  source: jwt\n",
            f"  source: header\n  header: {{name: {USER_HEADER}, trusted_sources: [127.0.0.1/32]}}\n",
        )
    if not cache:
        text = text.replace(
            "    leeway_seconds: 30\n",
            "    leeway_seconds: 30\n    verified_cache: {enabled: false}\n",
        )
    return parse_policy(text, "bench.yaml")


def _baseline(rendered: str) -> str:
    """The rendered config's global/defaults with a frontend that only answers 200."""
    head, _, rest = rendered.partition("\nfrontend ")
    name_bind = rest.splitlines()[:2]
    return (
        f"{head}\nfrontend {name_bind[0]}\n{name_bind[1]}\n"
        '    http-request return status 200 content-type text/plain string "hello"\n'
    )


def _one(
    haproxy: str,
    wrk: str,
    d: Path,
    sock: Path,
    variant: str,
    text: str,
    mode: str,
    duration: int,
    tokens: list[str],
    users: list[str],
    bearer_lua: Path,
    user_lua: Path,
) -> Run:
    port = _free_port()
    cfg = d / f"{variant}.cfg"
    cfg.write_text(text.replace("bind 127.0.0.1:0\n", f"bind 127.0.0.1:{port}\n"))
    if variant == "header":
        headers = [(USER_HEADER, u) for u in users]
        lua = user_lua
    else:
        headers = [("Authorization", f"Bearer {t}") for t in tokens]
        lua = bearer_lua
    warm = headers if mode == "pool" else headers[:1]
    hx = HAProxy(haproxy, cfg, port)
    try:
        bad = sum(hx.status(h) != 200 for h in warm)
        if bad:
            raise BenchError(f"{variant}: {bad} warm-up requests not answered 200")
        cpu0 = hx.cpu_seconds()
        rps, total, non_2xx, errors = _wrk(
            wrk, port, duration, headers[0], lua if mode == "pool" else None
        )
        cpu = hx.cpu_seconds() - cpu0
        entries = _table_entries(sock) if variant == "jwt-cache" else None
    finally:
        hx.stop()
    run = Run(variant, mode, rps, total, cpu * 1e6 / max(total, 1), non_2xx, errors, entries)
    print(
        f"{variant:12} {mode:5} {rps:>9.0f} req/s  {run.haproxy_cpu_us_per_req:6.1f} us CPU/req"
        f"  non-2xx={non_2xx}"
        + (f"  cache entries={entries}" if entries is not None else "")
        + (f"  socket errors:{errors}" if errors else ""),
        flush=True,
    )
    if non_2xx:
        raise BenchError(f"{variant}/{mode}: {non_2xx} non-2xx answers")
    if entries is not None and entries != len(warm):
        raise BenchError(f"{variant}/{mode}: {entries} cache entries, not {len(warm)}")
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.jwt_cache", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (1-10)")
    ap.add_argument("--tokens", type=int, default=1000, help="distinct tokens in the pool run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant and mode (1-3)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    if not 1 <= args.duration <= 10 or not 1 <= args.repeat <= 3 or not 1 <= args.tokens <= 5000:
        ap.error("--duration 1-10, --repeat 1-3, --tokens 1-5000")
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    wrk = shutil.which("wrk")
    if wrk is None or not Path(haproxy).exists():
        print("needs haproxy and wrk on PATH", file=sys.stderr)
        return 2

    runs: list[Run] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="scimgate-jwt-cache-") as tmp:
        d = Path(tmp)
        priv, pub = generate_rsa_keypair()
        (d / "jwt.pub.pem").write_text(pub)
        users = [f"user{i}@example.com" for i in range(args.tokens)]
        tokens = [
            mint_jwt(
                priv,
                subject_claim="email",
                identity=u,
                algorithm="RS256",
                issuer=ISSUER,
                audience=AUDIENCE,
                ttl_seconds=3600,
            )
            for u in users
        ]
        bearer_lua, user_lua = d / "bearer.lua", d / "user.lua"
        bearer_lua.write_text(
            LUA % (",\n".join(json.dumps(t) for t in tokens), "Authorization", "Bearer ")
        )
        user_lua.write_text(LUA % (",\n".join(json.dumps(u) for u in users), USER_HEADER, ""))
        (d / "maps").mkdir()
        sock = d / "admin.sock"
        secret_b64 = base64.b64encode(SECRET).decode()

        policies = {
            "header": _policy(d / "jwt.pub.pem", True, header=True),
            "jwt-nocache": _policy(d / "jwt.pub.pem", False),
            "jwt-cache": _policy(d / "jwt.pub.pem", True),
        }
        # the pseudonym keys depend on the identity value only: one map serves every variant
        (d / "maps" / map_file_names(1)[0]).write_text(
            "".join(
                f"{k} {v}\n"
                for u in users
                for k, v in entries_for_user(
                    {"userName": u}, [], policies["jwt-cache"], SECRET
                ).items()
            )
        )
        configs = {
            name: render_config(
                policy,
                map_dir=str(d / "maps"),
                hmac_secret_b64=secret_b64,
                bind="127.0.0.1:0",  # replaced per run
                stats_socket=str(sock),
                log_target="stdout format raw",
            )
            for name, policy in policies.items()
        }
        configs = {"baseline": _baseline(configs["jwt-nocache"]), **configs}

        for _ in range(args.repeat):  # rounds interleave the variants (the box may be shared)
            for variant, text in configs.items():
                for mode in ("fixed", "pool"):
                    runs.append(
                        _one(
                            haproxy,
                            wrk,
                            d,
                            sock,
                            variant,
                            text,
                            mode,
                            args.duration,
                            tokens,
                            users,
                            bearer_lua,
                            user_lua,
                        )
                    )
    load_after = os.getloadavg()

    def mean(variant: str, mode: str, attr: str) -> float:
        vals = [float(getattr(r, attr)) for r in runs if r.variant == variant and r.mode == mode]
        return sum(vals) / len(vals)

    print(
        f"\nwrk -t2 -c50 -d{args.duration}s, {args.repeat} round(s), {os.cpu_count()} CPUs, "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}. ratio = vs baseline; "
        "CPU ratio = baseline's HAProxy CPU per request / the variant's (capacity per core)."
    )
    print(
        f"\n| variant | fixed: req/s (ratio) | fixed: us CPU/req (CPU ratio) "
        f"| pool of {args.tokens}: req/s (ratio) | pool: us CPU/req (CPU ratio) |"
    )
    print("| --- | --- | --- | --- | --- |")
    summary: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        cells = []
        for mode in ("fixed", "pool"):
            rps, base = mean(variant, mode, "rps"), mean("baseline", mode, "rps")
            cpu = mean(variant, mode, "haproxy_cpu_us_per_req")
            base_cpu = mean("baseline", mode, "haproxy_cpu_us_per_req")
            summary[variant] = {
                **summary.get(variant, {}),
                f"{mode}_rps": rps,
                f"{mode}_ratio": rps / base,
                f"{mode}_cpu_us_per_req": cpu,
                f"{mode}_cpu_ratio": base_cpu / cpu,
            }
            cells += [f"{rps:,.0f} ({rps / base:.2f})", f"{cpu:.1f} ({base_cpu / cpu:.2f})"]
        print(f"| {variant} | {' | '.join(cells)} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "wrk": f"-t2 -c50 -d{args.duration}s",
                    "cpus": os.cpu_count(),
                    "loadavg": [load_before, load_after],
                    "variants": VARIANTS,
                    "runs": [asdict(r) for r in runs],
                    "summary": summary,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
