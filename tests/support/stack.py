"""Shared helpers for the fault / hostile-input / readiness e2e tests (real processes only).

Built on :mod:`tests.e2e.test_up` (``start_up``, :class:`UpStack`): read the live maps of a
target over the Runtime API, the desired state from the instance's database, kill and
restart the instance's HAProxy by PID, and wait (bounded) for convergence.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from scimgate.haproxy import HAProxyRuntimeError, RuntimeAddress, RuntimeClient, master_command
from scimgate.haproxy.master import parse_show_proc
from scimgate.haproxy.process import HAProxyProcess
from scimgate.policy.compiler import OVERLAY_TOMBSTONE, shard_of
from scimgate.store import outbox
from scimgate.store.db import Database
from scimgate.sync.layout import MapLayout
from tests.e2e.test_up import PATCH_SCHEMA, USER_SCHEMA, UpStack, pid_alive

KEY_RE = re.compile(r"^[0-9A-F]{64}$")
VALUE_RE = re.compile(r"^,(?:[a-z0-9_-]+,)*$")

T = TypeVar("T")


def write_config(directory: Path, **settings: Any) -> None:
    """Seed DIR/scimgate.yaml before `up` (it keeps keys it does not own)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "scimgate.yaml"
    data: dict[str, Any] = {}
    if path.exists():
        data = yaml.safe_load(path.read_text()) or {}
    data.update(settings)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def layout(up: UpStack, map_dir: str | None = None) -> MapLayout:
    """The instance's map layout: its shards and (rendered configs load one) the overlay."""
    return MapLayout(map_dir or up.info["map_dir"], int(up.info["map_shards"])).with_overlay()


def _apply_overlay(shards: list[dict[str, str]], overlay: dict[str, str], lay: MapLayout) -> None:
    for key, value in overlay.items():
        shard = shards[shard_of(key, lay.shards)]
        if value == OVERLAY_TOMBSTONE:
            shard.pop(key, None)
        else:
            shard[key] = value


def live_shards(runtime_api: str, lay: MapLayout, timeout: float = 5.0) -> list[dict[str, str]]:
    """Every identities shard as a request sees it, in shard order: the overlay's entries
    (read first, as a request does) over the shard's (``show map``)."""
    with RuntimeClient(runtime_api, timeout, cli_timeout=None) as client:
        overlay = client.show_map(lay.overlay) if lay.overlay else {}
        shards = [client.show_map(path) for path in lay.paths]
    _apply_overlay(shards, overlay, lay)
    return shards


def live_entries(runtime_api: str, lay: MapLayout) -> dict[str, str]:
    out: dict[str, str] = {}
    for shard in live_shards(runtime_api, lay):
        out.update(shard)
    return out


def raw_overlay(runtime_api: str, lay: MapLayout) -> dict[str, str]:
    """The overlay map's own entries (tombstones included)."""
    assert lay.overlay is not None
    with RuntimeClient(runtime_api, 5.0, cli_timeout=None) as client:
        return client.show_map(lay.overlay)


def desired(up: UpStack) -> dict[str, str]:
    """outbox.desired_entries of the instance's own database."""
    db = Database(up.info["database_url"])
    try:
        with db.read() as conn:
            return outbox.desired_entries(conn)
    finally:
        db.dispose()


def mismatch(up: UpStack, runtime_api: str | None = None, map_dir: str | None = None) -> str:
    """'' when the live maps equal the desired state exactly (each key in its own shard),
    else a short description."""
    lay = layout(up, map_dir)
    want = lay.split(desired(up))
    try:
        got = live_shards(runtime_api or up.info["runtime_api"], lay)
    except (HAProxyRuntimeError, OSError) as exc:
        return f"unreachable: {exc}"
    problems = []
    for path, w, g in zip(lay.paths, want, got, strict=True):
        if w != g:
            missing = len(w.keys() - g.keys())
            extra = len(g.keys() - w.keys())
            wrong = sum(1 for k in w.keys() & g.keys() if w[k] != g[k])
            problems.append(f"{Path(path).name}: missing={missing} extra={extra} wrong={wrong}")
    return "; ".join(problems)


def map_files(up: UpStack) -> dict[str, str]:
    """The identities map files on disk (what a reloaded or restarted HAProxy loads)."""
    lay = layout(up)

    def read(path: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in Path(path).read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.partition(" ")
                out[key] = value
        return out

    shards = [read(path) for path in lay.paths]
    assert lay.overlay is not None
    _apply_overlay(shards, read(lay.overlay), lay)  # a reload loads the overlay file too
    return {k: v for shard in shards for k, v in shard.items()}


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.1) -> tuple[T, float]:
    """Call ``check`` until it returns a falsy value (success) or ``timeout`` passes; returns
    the last result and the seconds waited."""
    start = time.monotonic()
    while True:
        result = check()
        elapsed = time.monotonic() - start
        if not result or elapsed >= timeout:
            return result, elapsed
        time.sleep(interval)


def wait_converged(
    up: UpStack, timeout: float = 20.0, runtime_api: str | None = None, map_dir: str | None = None
) -> float:
    """Bounded wait until live maps == desired; asserts and returns the seconds it took."""
    result, elapsed = wait_until(lambda: mismatch(up, runtime_api, map_dir), timeout, 0.1)
    assert not result, f"not converged after {elapsed:.1f}s: {result}"
    return elapsed


# ---------------------------------------------------------------------------------------------
# HAProxy of an `up` instance


def master_pids(master_api: str) -> tuple[int, list[int]]:
    procs = parse_show_proc(master_command(RuntimeAddress.parse(master_api), "show proc", 2.0))
    return procs.master.pid, procs.worker_pids + [w.pid for w in procs.old_workers]


def kill_haproxy(master_api: str) -> list[int]:
    """SIGKILL the master and every worker (by the PIDs the master reports); wait until gone."""
    master, workers = master_pids(master_api)
    pids = [master, *workers]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(pid_alive(p) for p in pids), f"haproxy pids still alive: {pids}"
    return pids


def haproxy_for(up: UpStack, directory: Path | None = None) -> HAProxyProcess:
    """An HAProxyProcess with the same command line `up` uses (same config, sockets, pid
    file, log) for the instance's haproxy/ dir (or another one, e.g. haproxy2/)."""
    base = directory or Path(up.info["haproxy_config"]).parent
    return HAProxyProcess(
        base / "haproxy.cfg",
        base / "master.sock",
        pid_file=base / "haproxy.pid",
        log_path=base / "haproxy.log",
        stats_socket=f"unix:{base / 'admin.sock'}",
    )


@contextlib.contextmanager
def started(proc: HAProxyProcess) -> Iterator[HAProxyProcess]:
    """Start an HAProxy we own; stop it by PID at the end, whatever happens."""
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


# ---------------------------------------------------------------------------------------------
# SCIM and HTTP


def create_user(scim: httpx.Client, user_name: str, active: bool = True) -> httpx.Response:
    return scim.post("/Users", json={
        "schemas": [USER_SCHEMA], "userName": user_name, "active": active,
        "emails": [{"value": user_name, "primary": True}],
    })  # fmt: skip


def patch(scim: httpx.Client, path: str, *ops: dict[str, Any]) -> httpx.Response:
    return scim.patch(path, json={"schemas": [PATCH_SCHEMA], "Operations": list(ops)})


def set_active(scim: httpx.Client, user_id: str, active: bool) -> httpx.Response:
    return patch(scim, f"/Users/{user_id}", {"op": "replace", "path": "active", "value": active})


def access(web: httpx.Client, token: str, path: str = "/") -> int:
    return web.get(path, headers={"Authorization": f"Bearer {token}"}).status_code


class Minter:
    """``UpStack.mint`` without its per-call cost: the policy and the private key are loaded
    once (parsing the RSA PEM takes ~0.1 s per token; signing with a loaded key ~2 ms)."""

    def __init__(self, up: UpStack) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from scimgate.policy.model import load_policy

        jwt = load_policy(up.info["policy_file"]).identity.jwt
        assert jwt is not None
        self.jwt = jwt
        self.key = load_pem_private_key(Path(up.info["jwt_private_key"]).read_bytes(), None)

    def __call__(self, subject: str, ttl: int = 300) -> str:
        from scimgate.policy.jwtmint import mint_jwt

        j = self.jwt
        return mint_jwt(
            self.key,  # type: ignore[arg-type]  # PyJWT takes a loaded key object too
            subject_claim=j.claim, identity=subject, algorithm=j.algorithm, issuer=j.issuer,
            audience=j.audience, ttl_seconds=ttl,
        )  # fmt: skip


def readyz(up: UpStack) -> httpx.Response:
    return httpx.get(up.info["scim_url"].rsplit("/scim", 1)[0] + "/readyz", timeout=5)


def healthz(up: UpStack) -> httpx.Response:
    return httpx.get(up.info["scim_url"].rsplit("/scim", 1)[0] + "/healthz", timeout=5)
