"""Crash consistency of writes and their audit events: a real `scimgate serve` (SQLite and
PostgreSQL) is SIGKILLed in the middle of a burst of concurrent SCIM creates and patches,
then restarted on the same directory. Every acknowledged write must be in the store with its
audit event, the chain must verify, and no write may exist without its event (or the other
way round): each write and its event commit in one transaction."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from scimgate.audit.log import verify
from scimgate.config import default_sqlite_url
from scimgate.store import tables
from tests.fixtures.server import ScimServer, scimgate_cmd, start_server
from tests.support.scim import PATCH_SCHEMA as PATCH, USER_SCHEMA as USER

REQUESTS, THREADS, KILL_AFTER = 300, 8, 100


def restart(server: ScimServer) -> ScimServer:
    """`scimgate serve` again on the same directory (same port, database and token)."""
    log = open(server.directory / "server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        scimgate_cmd("serve", "--dir", str(server.directory)), stdout=log, stderr=subprocess.STDOUT
    )
    root = server.base_url.removesuffix("/scim/v2")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (server.directory / "server.log").read_text()[-3000:]
        try:
            if httpx.get(root + "/healthz", timeout=1).status_code == 200:
                return ScimServer(
                    server.base_url, server.token, server.directory, proc, server.database_url
                )
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("scimgate serve did not restart in 60 s")


def burst(server: ScimServer) -> tuple[list[tuple[str, str, str | None]], int]:
    """REQUESTS creates/patches from THREADS threads; SIGKILL the server after KILL_AFTER
    acknowledged writes. Returns the acknowledged writes (op, id, title) and how many
    requests got no answer."""
    acked: list[tuple[str, str, str | None]] = []
    lock = threading.Lock()
    numbers = itertools.count()
    killed = threading.Event()
    unanswered = itertools.count()
    unexpected: list[str] = []
    run = uuid.uuid4().hex[:8]

    def worker() -> None:
        mine: list[str] = []
        with server.client() as scim:
            while (n := next(numbers)) < REQUESTS:
                try:
                    if not mine or n % 3 == 0:
                        r = scim.post(
                            "/Users", json={"schemas": [USER], "userName": f"crash-{run}-{n}"}
                        )
                        if r.status_code == 201:
                            mine.append(r.json()["id"])
                            with lock:
                                acked.append(("create", r.json()["id"], None))
                    else:
                        uid, title = mine[n % len(mine)], f"title-{n}"
                        r = scim.patch(
                            f"/Users/{uid}",
                            json={
                                "schemas": [PATCH],
                                "Operations": [{"op": "replace", "path": "title", "value": title}],
                            },
                        )
                        if r.status_code == 200:
                            with lock:
                                acked.append(("patch", uid, title))
                    if r.status_code not in (200, 201):
                        unexpected.append(f"{r.status_code} {r.text}")
                except httpx.HTTPError:
                    next(unanswered)
                    if killed.is_set():
                        return

    def killer() -> None:
        while not killed.is_set():
            with lock:
                if len(acked) >= KILL_AFTER:
                    os.kill(server.proc.pid, signal.SIGKILL)
                    killed.set()
                    return
            time.sleep(0.002)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    k = threading.Thread(target=killer)
    k.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    killed.set()
    k.join()
    server.proc.wait(10)
    assert not unexpected, unexpected[:5]
    return acked, next(unanswered)


def read_store(url: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            u, e = tables.users, tables.audit_events
            users = {
                r.id: {"version": r.version, "title": (r.attrs or {}).get("title")}
                for r in conn.execute(sa.select(u.c.id, u.c.version, u.c.attrs))
            }
            events = [
                dict(r)
                for r in conn.execute(
                    sa.select(e).where(e.c.kind == "scim.write").order_by(e.c.seq)
                ).mappings()
            ]
            total = conn.execute(sa.select(sa.func.count()).select_from(e)).scalar_one()
            assert verify(conn).ok
    finally:
        engine.dispose()
    return users, events, total


def test_sigkill_mid_burst_loses_no_acknowledged_write(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (
        default_sqlite_url(tmp_path)
        if backend == "sqlite"
        else request.getfixturevalue("pg_server").create_database()
    )
    server = start_server(tmp_path, url)
    try:
        acked, unanswered = burst(server)
        assert server.proc.returncode == -signal.SIGKILL
        # Killed mid-burst: some writes were acknowledged, some never got an answer.
        assert len(acked) >= KILL_AFTER and unanswered > 0, (len(acked), unanswered)
        server = restart(server)

        users, events, total = read_store(url)
        created = {e["resource_id"] for e in events if e["operation"] == "create"}
        patches: dict[str, list[str]] = defaultdict(list)
        for e in events:
            if e["operation"] == "patch":
                patches[e["resource_id"]].append(e["detail"]["changed"]["title"][1])

        # Every acknowledged write is in the store and has its audit event.
        with server.client() as scim:
            for op, uid, title in acked:
                assert uid in users and uid in created, (op, uid)
                if op == "patch":
                    assert title in patches[uid], (uid, title)
            for uid in {uid for _, uid, _ in acked}:
                r = scim.get(f"/Users/{uid}")
                assert r.status_code == 200 and r.json().get("title") == users[uid]["title"]

        # No write without its event, no event without its write.
        assert set(users) == created
        for uid, row in users.items():
            assert row["version"] == 1 + len(patches[uid]), uid
            assert row["title"] == (patches[uid][-1] if patches[uid] else None), uid

        p = subprocess.run(
            scimgate_cmd("audit", "verify", "--dir", str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(f"audit chain OK: {total} events")

        # And the restarted server keeps appending to the same chain.
        with server.client() as scim:
            r = scim.post(
                "/Users", json={"schemas": [USER], "userName": f"after-{uuid.uuid4().hex}"}
            )
            assert r.status_code == 201, r.text
        assert read_store(url)[2] == total + 1  # (read_store verifies the chain)
    finally:
        server.stop()
