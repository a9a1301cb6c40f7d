"""Faults through a real `scimgate up`: HAProxy killed / reloaded / down, scimgate killed
mid-burst, two targets. After each, the live maps of every target (``show map`` over every
shard) equal the desired state in the store exactly, and enforcement over HTTP agrees.

Every process is a real one on loopback, stopped by PID; every wait is bounded. Recovery
times are printed (``pytest -s``) as ``RECOVERY <what>: <seconds>``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from scimgate.haproxy.process import HAProxyProcess
from tests.support import stack as st
from tests.support.haproxy import started, up_haproxy
from tests.support.net import free_port
from tests.support.scim import GROUP_SCHEMA, patch, post_user, set_active
from tests.support.up import UpStack, pid_alive, start_up
from tests.support.versions import HAProxyBinary

pytestmark = pytest.mark.haproxy


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def report(what: str, seconds: float) -> None:
    print(f"RECOVERY {what}: {seconds:.2f}s", flush=True)


def make_groups(scim: httpx.Client) -> dict[str, str]:
    ids = {}
    for name in ("Admins", "Engineering"):
        r = scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": name})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    return ids


def add_member(scim: httpx.Client, group_id: str, user_id: str) -> httpx.Response:
    return patch(scim, f"/Groups/{group_id}",
                    {"op": "add", "path": "members", "value": [{"value": user_id}]})  # fmt: skip


def remove_member(scim: httpx.Client, group_id: str, user_id: str) -> httpx.Response:
    return patch(scim, f"/Groups/{group_id}",
                    {"op": "remove", "path": f'members[value eq "{user_id}"]'})  # fmt: skip


def created(r: httpx.Response) -> str:
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def ok(r: httpx.Response) -> None:
    assert r.status_code in (200, 204), r.text


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, haproxy_version: HAProxyBinary
) -> Iterator[UpStack]:
    up = start_up(tmp_path_factory.mktemp("faults"), haproxy=haproxy_version.path)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def restarted(stack: UpStack) -> Iterator[list[HAProxyProcess]]:
    """HAProxy processes a test restarted for the module's stack: stopped by PID at the end."""
    procs: list[HAProxyProcess] = []
    yield procs
    for proc in procs:
        proc.stop()


@pytest.fixture(scope="module")
def groups(stack: UpStack) -> dict[str, str]:
    with stack.scim() as scim:
        return make_groups(scim)


# ---------------------------------------------------------------------------------------------
# HAProxy SIGKILLed and restarted, HAProxy reloaded


def test_haproxy_sigkill_and_restart_restores_state(
    stack: UpStack, groups: dict[str, str], restarted: list[HAProxyProcess]
) -> None:
    alice, bob, carol = unique("alice"), unique("bob"), unique("carol")
    with stack.scim() as scim:
        alice_id = created(post_user(scim, alice))
        ok(add_member(scim, groups["Engineering"], alice_id))
        bob_id = created(post_user(scim, bob))
    st.wait_converged(stack, 10)

    killed = st.kill_haproxy(stack.info["master_api"])
    assert len(killed) >= 2  # master and worker
    # While HAProxy is gone: SCIM keeps accepting writes (read-your-writes times out, bounded).
    with stack.scim() as scim:
        ok(set_active(scim, bob_id, False))
        carol_id = created(post_user(scim, carol))
        ok(add_member(scim, groups["Admins"], carol_id))
    # Restart with the same command line as `up`, but with EMPTY map files: whatever HAProxy
    # holds afterwards is the engine's doing, not a lucky file on disk.
    lay = st.layout(stack)
    for path in [*lay.paths, lay.overlay]:
        Path(str(path)).write_text("")
    proc = up_haproxy(stack.info)
    restarted.append(proc)  # kept running for the next test; stopped by PID at module end
    t0 = time.monotonic()
    proc.start()
    st.wait_converged(stack, 20)
    report("haproxy SIGKILL -> restart, live maps == desired", time.monotonic() - t0)
    mint = st.Minter(stack)
    token = {u: mint(u) for u in (alice, bob, carol)}
    with stack.browser() as web:
        assert st.access(web, token[alice], "/eng") == 200
        assert st.access(web, token[alice], "/admin") == 403
        assert st.access(web, token[bob], "/") == 403  # deactivated while HAProxy was down
        assert st.access(web, token[carol], "/admin") == 200
    # and it keeps following the change log afterwards (read-your-writes again)
    with stack.scim() as scim:
        ok(set_active(scim, alice_id, False))
    with stack.browser() as web:
        assert st.access(web, token[alice], "/") == 403
    assert st.mismatch(stack) == ""


def _file_value(up: UpStack, user: str) -> str | None:
    """What a freshly started HAProxy would load for ``user`` from the map files: the
    overlay file's line first (``-`` is a tombstone), then the user's shard file."""
    import base64

    from scimgate.policy.compiler import identity_key, shard_of

    secret = base64.b64decode((up.directory / "hmac.key").read_text())
    key = identity_key(user, secret)
    lay = st.layout(up)
    for path in [lay.overlay, lay.paths[shard_of(key, lay.shards)]]:
        for line in Path(str(path)).read_text().splitlines():
            if line.startswith(key + " "):
                return line.split(" ", 1)[1]
    return None


def test_deprovision_while_target_down_reaches_the_map_files_at_once(
    stack: UpStack, restarted: list[HAProxyProcess]
) -> None:
    """Regression (issue 15, docs/operations.md section 3): a user deactivated while HAProxy
    is down was still granted by the overlay file until the shard files' 10 s debounce, so an
    HAProxy restarted in that window admitted them. The files now deny within a tick."""
    if not Path(stack.info["master_api"].removeprefix("unix:")).exists():
        pytest.skip("no HAProxy running (previous test failed)")
    dora = unique("dora")
    with stack.scim() as scim:
        dora_id = created(post_user(scim, dora))
    st.wait_converged(stack, 10)
    token = st.Minter(stack)(dora)
    st.kill_haproxy(stack.info["master_api"])
    with stack.scim() as scim:
        ok(set_active(scim, dora_id, False))
    deadline = time.monotonic() + 3  # well under SHARD_FILES_DEBOUNCE_SECONDS (10 s)
    while _file_value(stack, dora) not in (None, "-") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _file_value(stack, dora) in (None, "-")
    proc = up_haproxy(stack.info)
    restarted.append(proc)
    proc.start()
    with stack.browser() as web:  # the first request, before or after the engine's resync
        assert st.access(web, token, "/") == 403
    st.wait_converged(stack, 20)


def test_reload_through_master_cli_new_worker_is_current(
    stack: UpStack, groups: dict[str, str]
) -> None:
    if not Path(stack.info["master_api"].removeprefix("unix:")).exists():
        pytest.skip("no HAProxy running (previous test failed)")
    erins = [unique(f"erin{i}") for i in range(3)]
    dave = unique("dave")
    with stack.scim() as scim:
        erin_ids = [created(post_user(scim, e)) for e in erins]
    mint = st.Minter(stack)
    token = {u: mint(u) for u in (dave, *erins)}
    with stack.browser() as web:
        assert all(st.access(web, token[e]) == 200 for e in erins)
    st.wait_converged(stack, 10)
    # the map files (debounced) hold the active users too: a new worker loads them ACTIVE
    st.wait_until(lambda: st.map_files(stack) != st.desired(stack), 10)
    assert st.map_files(stack) == st.desired(stack)

    _, old_workers = st.master_pids(stack.info["master_api"])
    t0 = time.monotonic()
    procs = up_haproxy(stack.info).reload(timeout=10)
    assert not set(procs.worker_pids) & set(old_workers)
    # Right after the reload: deactivations and a new admin, each enforced by the NEW worker
    # (new connections) as soon as SCIM answered (read-your-writes).
    with stack.scim() as scim, httpx.Client(base_url=stack.info["haproxy_url"], timeout=10) as web:
        for erin, erin_id in zip(erins, erin_ids, strict=True):
            ok(set_active(scim, erin_id, False))
            assert st.access(web, token[erin]) == 403, "deactivation acknowledged, not enforced"
        dave_id = created(post_user(scim, dave))
        ok(add_member(scim, groups["Admins"], dave_id))
        assert st.access(web, token[dave], "/admin") == 200
    st.wait_converged(stack, 20)
    report("reload -> live maps == desired", time.monotonic() - t0)


def test_change_acknowledged_just_before_a_reload_is_enforced_by_the_new_worker(
    stack: UpStack,
) -> None:
    if not Path(stack.info["master_api"].removeprefix("unix:")).exists():
        pytest.skip("no HAProxy running (previous test failed)")
    name = unique("frank")
    with stack.scim() as scim:
        uid = created(post_user(scim, name))
    token = st.Minter(stack)(name)
    st.wait_until(lambda: st.map_files(stack) != st.desired(stack), 10)
    with stack.scim() as scim:
        ok(set_active(scim, uid, False))  # acknowledged: enforced from now on
    up_haproxy(stack.info).reload(timeout=10)
    try:
        with httpx.Client(base_url=stack.info["haproxy_url"], timeout=10) as web:
            assert st.access(web, token) == 403, "acknowledged deactivation undone by a reload"
    finally:
        st.wait_converged(stack, 20)


# ---------------------------------------------------------------------------------------------
# Target down during 1,000 SCIM changes


RYW_TIMEOUT_DOWN = 0.05  # `up` forces read_your_writes on; keep each write's wait short


def test_target_down_during_1000_changes_then_converges(
    tmp_path: Path, haproxy_version: HAProxyBinary
) -> None:
    directory = tmp_path / "down"
    st.write_config(directory, read_your_writes_timeout=RYW_TIMEOUT_DOWN)
    up = start_up(directory, haproxy=haproxy_version.path)
    try:
        with up.scim() as scim:
            gid = make_groups(scim)
            created(post_user(scim, unique("before")))
        st.wait_converged(up, 10)
        master, _ = st.master_pids(up.info["master_api"])
        os.kill(master, signal.SIGTERM)  # HAProxy stopped (gracefully this time)
        deadline = time.monotonic() + 10
        while pid_alive(master) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(master)

        threads, per_thread = 8, 42  # 8 x 42 creates + 8 x 42 x 2 patches = 1,008 changes
        results: list[dict[str, tuple[str, bool, bool]]] = [{} for _ in range(threads)]

        def work(n: int) -> int:
            changes = 0
            users = results[n]
            with up.scim() as scim:  # one keep-alive connection per thread
                for i in range(per_thread):
                    name = f"down-{n}-{i}@example.com"
                    users[name] = (created(post_user(scim, name)), True, False)
                    changes += 1
                for i, (name, (uid, _, _)) in enumerate(list(users.items())):
                    if i % 2:
                        ok(set_active(scim, uid, False))
                        ok(set_active(scim, uid, True) if i % 4 == 3 else
                           set_active(scim, uid, False))  # fmt: skip
                        users[name] = (uid, i % 4 == 3, False)
                    else:
                        ok(add_member(scim, gid["Engineering"], uid))
                        ok(remove_member(scim, gid["Engineering"], uid) if i % 4 == 2 else
                           add_member(scim, gid["Admins"], uid))  # fmt: skip
                        users[name] = (uid, True, i % 4 == 0)
                    changes += 2
            return changes

        t0 = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            total = sum(pool.map(work, range(threads)))
        write_seconds = time.monotonic() - t0
        assert total >= 1000
        print(f"1,000 SCIM changes with HAProxy down: {write_seconds:.1f}s", flush=True)
        assert st.mismatch(up).startswith("unreachable")

        proc = up_haproxy(up.info)
        t0 = time.monotonic()
        with started(proc):
            st.wait_converged(up, 30)
            report("target back after 1,000 changes, live maps == desired",
                   time.monotonic() - t0)  # fmt: skip
            sample = random.Random(7).sample([u for part in results for u in part.items()], 40)
            mint = st.Minter(up)
            with up.browser() as web:
                assert st.access(web, mint(unique("nobody"))) == 403
                for name, (_uid, active, eng) in sample:
                    token = mint(name)
                    assert st.access(web, token) == (200 if active else 403), name
                    assert st.access(web, token, "/eng") == (200 if eng else 403), name
    finally:
        up.stop()


# ---------------------------------------------------------------------------------------------
# scimgate SIGKILLed during a burst of writes


@dataclass
class Model:
    """What the IdP was told (2xx) about one user, per attribute; None = unknown (the
    request was in flight when scimgate died)."""

    name: str
    uid: str
    active: bool | None = True
    groups: dict[str, bool | None] = field(default_factory=lambda: {"Admins": False,
                                                                     "Engineering": False})  # fmt: skip


def test_scimgate_sigkill_during_burst_every_acknowledged_write_enforced(
    tmp_path: Path, haproxy_version: HAProxyBinary
) -> None:
    directory = tmp_path / "crash"
    up = start_up(directory, haproxy=haproxy_version.path)
    models: list[Model] = []
    lock = threading.Lock()
    acked = [0]
    kill_at, threads, ops_per_thread = 150, 8, 38  # ~300 writes planned, killed halfway
    try:
        with up.scim() as scim:
            gid = make_groups(scim)

        def work(n: int) -> None:
            rnd = random.Random(n)
            mine: list[Model] = []
            with up.scim() as scim:
                for i in range(ops_per_thread):
                    op = "create" if len(mine) < 2 or rnd.random() < 0.25 else rnd.choice(
                        ["active", "Admins", "Engineering"])  # fmt: skip
                    m = rnd.choice(mine) if mine else None
                    new = not m or op == "create"
                    try:
                        if new:
                            name = f"burst-{n}-{i}-{uuid.uuid4().hex[:6]}@example.com"
                            r = post_user(scim, name)
                            assert r.status_code == 201, r.text
                            m = Model(name, r.json()["id"])
                            mine.append(m)
                            with lock:
                                models.append(m)
                        elif op == "active":
                            assert m is not None
                            want = not m.active if m.active is not None else False
                            m.active = None
                            r = set_active(scim, m.uid, want)
                            assert r.status_code in (200, 204), r.text
                            m.active = want
                        else:
                            assert m is not None
                            member = not m.groups[op] if m.groups[op] is not None else True
                            m.groups[op] = None
                            r = (add_member if member else remove_member)(scim, gid[op], m.uid)
                            assert r.status_code in (200, 204), r.text
                            m.groups[op] = member
                    except httpx.TransportError:
                        return  # scimgate is gone; the state of this one write is unknown
                    with lock:
                        acked[0] += 1

        with ThreadPoolExecutor(threads) as pool:
            futures = [pool.submit(work, n) for n in range(threads)]
            deadline = time.monotonic() + 120
            while acked[0] < kill_at and time.monotonic() < deadline:
                if all(f.done() for f in futures):
                    break
                time.sleep(0.005)
            up.proc.send_signal(signal.SIGKILL)
            up.proc.wait(10)
            for f in futures:
                f.result(timeout=60)
        assert acked[0] >= kill_at, f"burst too short: {acked[0]}"
        print(f"scimgate SIGKILLed after {acked[0]} acknowledged writes", flush=True)

        t0 = time.monotonic()
        up = start_up(
            directory, haproxy=haproxy_version.path
        )  # same DIR: replaces the HAProxy the killed run left
        st.wait_converged(up, 20)
        report("scimgate SIGKILL -> restart `up`, live maps == desired", time.monotonic() - t0)
        checked = 0
        mint = st.Minter(up)
        with up.browser() as web:
            for m in models:
                token = mint(m.name)
                if m.active is not None:
                    assert st.access(web, token) == (200 if m.active else 403), m
                    checked += 1
                if m.active:
                    for group, path in (("Admins", "/admin"), ("Engineering", "/eng")):
                        if m.groups[group] is not None:
                            assert st.access(web, token, path) == (
                                200 if m.groups[group] else 403
                            ), (m, group)
        assert checked >= len(models) - threads
    finally:
        up.stop()


# ---------------------------------------------------------------------------------------------
# Two targets


def test_two_targets_stay_identical(tmp_path: Path, haproxy_version: HAProxyBinary) -> None:
    directory = (tmp_path / "two").resolve()
    second = directory / "haproxy2"
    st.write_config(directory, targets=[{
        "name": "second", "runtime_api": f"unix:{second / 'admin.sock'}",
        "master_api": f"unix:{second / 'master.sock'}", "map_dir": str(second / "maps"),
    }])  # fmt: skip
    up = start_up(directory, haproxy=haproxy_version.path)
    try:
        conf = yaml.safe_load((directory / "scimgate.yaml").read_text())
        assert [t["name"] for t in conf["targets"]] == ["local", "second"]
        # The second HAProxy: the same rendered config on its own port, sockets and maps.
        first = Path(up.info["haproxy_config"]).parent
        shutil.copytree(first / "maps", second / "maps", dirs_exist_ok=True)
        port2 = free_port()
        text = (first / "haproxy.cfg").read_text()
        bind = up.info["haproxy_url"].removeprefix("http://")
        assert text.count(f"bind {bind}") == 1
        text = text.replace(f"bind {bind}", f"bind 127.0.0.1:{port2}")
        text = text.replace(str(first / "admin.sock"), str(second / "admin.sock"))
        text = text.replace(str(first / "maps") + "/", str(second / "maps") + "/")
        (second / "haproxy.cfg").write_text(text)
        with started(up_haproxy(up.info, second)):
            _, waited = st.wait_until(lambda: st.readyz(up).status_code != 200, 20, 0.2)
            assert st.readyz(up).status_code == 200, st.readyz(up).text
            report("second target joined (readyz 200)", waited)
            with up.scim() as scim:
                gid = make_groups(scim)
                names = []
                for i in range(40):
                    name = unique(f"two{i}")
                    uid = created(post_user(scim, name))
                    names.append(name)
                    if i % 3 == 0:
                        ok(add_member(scim, gid["Admins"], uid))
                    if i % 3 == 1:
                        ok(set_active(scim, uid, False))
            t0 = time.monotonic()
            runtime2 = f"unix:{second / 'admin.sock'}"
            st.wait_converged(up, 10)
            st.wait_converged(up, 10, runtime_api=runtime2, map_dir=str(second / "maps"))
            report("two targets converged after burst", time.monotonic() - t0)
            one = st.live_entries(up.info["runtime_api"], st.layout(up))
            two = st.live_entries(runtime2, st.layout(up, str(second / "maps")))
            assert one == two == st.desired(up)
            assert len(one) >= 40 - 14  # deactivated users have no entry
            # enforced identically by both
            with (
                up.browser() as web1,
                httpx.Client(base_url=f"http://127.0.0.1:{port2}", timeout=10) as web2,
            ):
                mint = st.Minter(up)
                for i, name in enumerate(names[:12]):
                    token = mint(name)
                    want = (403 if i % 3 == 1 else 200, 200 if i % 3 == 0 else 403)
                    for web in (web1, web2):
                        assert (st.access(web, token), st.access(web, token, "/admin")) == want
    finally:
        up.stop()
