"""The session cutter (sync/sessions.py) against real HAProxy 2.6 and 3.0 processes and a
real SQLite store: WebSockets through a frontend carrying the rendered tracking rules, the
cutter's revocation pass and its sweep (the store's current values decide), each cut audited
and counted; a stream whose identity keeps the route is never touched. The sweep on its own
thread (``live_session_sweep_seconds``) judges agents by ``allow_agents`` and people by
``allow_groups`` (the kind HAProxy recorded), and records its outcome for ``scimgate status``."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from websockets.sync.client import ClientConnection, connect

from scimgate.config import Settings, TargetConfig
from scimgate.instance.demo_ws import running_echo
from scimgate.metrics import Metrics
from scimgate.policy.jwtmint import demo_policy_yaml
from scimgate.policy.model import Policy, parse_policy
from scimgate.policy.sessions import SESSIONS_TABLE, sessions_table, tracking_rules
from scimgate.store import migrate, tables
from scimgate.store.db import Database
from scimgate.sync.sessions import SessionCutter
from scimgate.sync.status import status_from_db
from tests.fixtures.haproxy import RUNTIME_GLOBAL, RunningHAProxy
from tests.support.net import free_port
from tests.support.tunnels import echoes, seconds_until_closed
from tests.support.versions import HAProxyBinary

pytestmark = pytest.mark.haproxy

ALICE, BOB, CAROL = "A" * 64, "B" * 64, "C" * 64


def config(echo_port: int) -> str:
    """The rendered tracking rules behind a stand-in identity step (the key from a header;
    the route is /ws)."""
    rules = "\n".join(f"    {line}" for line in tracking_rules())
    return (
        RUNTIME_GLOBAL
        + "    timeout tunnel 1h\n"
        + "\nfrontend fe_scimgate\n    bind 127.0.0.1:$port0\n"
        + "    http-request set-var(txn.scimgate_key) req.fhdr(x-key)\n"
        + "    http-request set-var(txn.scimgate_route) str(ws)\n"
        + rules
        + "\n    default_backend be_echo\n"
        + f"\nbackend be_echo\n    server s1 127.0.0.1:{echo_port}\n"
        + f"\nbackend {SESSIONS_TABLE}\n    {sessions_table()}\n"
    )


@pytest.fixture
def echo_port() -> Iterator[int]:
    port = free_port()
    with running_echo(("127.0.0.1", port)):
        yield port


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'scimgate.db'}")
    migrate.upgrade(database)
    yield database
    database.dispose()


def cutter_for(proc: RunningHAProxy, db: Database, tmp_path: Path) -> SessionCutter:
    policy = tmp_path / "policy.yaml"
    policy.write_text(demo_policy_yaml(ws_port=9))  # the '/ws' route: any active user
    target = TargetConfig(
        name="t1",
        runtime_api=f"unix:{proc.workdir / 'admin.sock'}",
        master_api=f"unix:{proc.master_socket}",
    )
    settings = Settings(
        base_dir=tmp_path, database_url=db.url, targets=[target], policy_file=policy
    )
    # record=run now: the audit event is written before the call returns
    return SessionCutter(target, settings, db, Metrics(), threading.Event(), lambda job: job())


def ws(port: int, key: str, route: str = "ws", agent: bool = False) -> ClientConnection:
    headers = {"x-key": key, "x-route": route, **({"x-agent": "1"} if agent else {})}
    conn = connect(
        f"ws://127.0.0.1:{port}/ws", additional_headers=headers, compression=None,
        ping_interval=None, close_timeout=1,
    ).__enter__()  # fmt: skip
    assert echoes(conn)
    return conn


def cut_events(db: Database) -> list[dict[str, object]]:
    with db.read() as conn:
        e = tables.audit_events
        return [
            dict(r.detail)
            for r in conn.execute(sa.select(e.c.detail).where(e.c.kind == "session.cut"))
        ]


@pytest.fixture
def gate(
    haproxy_factory: Callable[..., RunningHAProxy], haproxy_version: HAProxyBinary, echo_port: int
) -> RunningHAProxy:
    return haproxy_factory(config(echo_port), binary=haproxy_version.path)


def test_revocation_cuts_only_the_revoked_identity(
    gate: RunningHAProxy, db: Database, tmp_path: Path
) -> None:
    cutter = cutter_for(gate, db, tmp_path)
    alice, bob = ws(gate.port, ALICE), ws(gate.port, BOB)
    cuts = cutter.cut({BOB: None, ALICE: ","}, "revoked")  # Bob lost everything; Alice kept /ws
    assert [(c.identity_key, c.route, c.reason) for c in cuts] == [(BOB, "ws", "revoked")]
    assert seconds_until_closed(bob, 2.0) is not None
    assert echoes(alice)
    assert cutter.cut({ALICE: "-"}, "revoked")  # the overlay tombstone revokes too
    assert seconds_until_closed(alice, 2.0) is not None
    events = cut_events(db)
    assert [e["identity_key"] for e in events] == [BOB, ALICE]
    assert all(e["worker_pid"] in gate.master_procs().worker_pids for e in events)


def test_sweep_cuts_what_the_store_no_longer_allows(
    gate: RunningHAProxy, db: Database, tmp_path: Path
) -> None:
    with db.write() as conn:  # Alice is provisioned; Bob has no entry (deprovisioned earlier)
        conn.execute(tables.map_entries.insert().values(identity_key=ALICE, value=",", user_id="a"))
    cutter = cutter_for(gate, db, tmp_path)
    alice, bob = ws(gate.port, ALICE), ws(gate.port, BOB)
    cuts = cutter.sweep()
    assert [(c.identity_key, c.reason) for c in cuts] == [(BOB, "sweep")]
    assert seconds_until_closed(bob, 2.0) is not None
    assert echoes(alice)
    assert cutter.sweep() == []  # nothing left to cut: Alice is still allowed
    alice.close()


def test_a_stream_on_an_old_worker_is_cut_through_the_master(
    gate: RunningHAProxy, db: Database, tmp_path: Path
) -> None:
    cutter = cutter_for(gate, db, tmp_path)
    bob = ws(gate.port, BOB)
    procs = gate.reload()
    old = {w.pid for w in procs.old_workers}
    assert old, "the open tunnel should keep the old worker"
    cuts = cutter.cut({BOB: None}, "revoked")
    assert [c.pid for c in cuts] and {c.pid for c in cuts} <= old
    assert seconds_until_closed(bob, 2.0) is not None


def agents_config(echo_port: int) -> str:
    """The rendered tracking rules of a policy with agents, behind a stand-in identity step:
    key and route from headers, an agent's request marked by ``x-agent`` (the ACL name the
    rendered agent rules define)."""
    rules = "\n".join(f"    {line}" for line in tracking_rules(agents_policy()))
    return (
        RUNTIME_GLOBAL
        + "    timeout tunnel 1h\n"
        + "\nfrontend fe_scimgate\n    bind 127.0.0.1:$port0\n"
        + "    acl scimgate_agent_token req.fhdr(x-agent) -m found\n"
        + "    http-request set-var(txn.scimgate_key) req.fhdr(x-key)\n"
        + "    http-request set-var(txn.scimgate_route) req.fhdr(x-route)\n"
        + rules
        + "\n    default_backend be_echo\n"
        + f"\nbackend be_echo\n    server s1 127.0.0.1:{echo_port}\n"
        + f"\nbackend {SESSIONS_TABLE}\n    {sessions_table()}\n"
    )


def agents_policy() -> Policy:
    return parse_policy(demo_policy_yaml(agents=True, ws_port=9))


def test_the_sweep_runs_on_its_own_judges_each_kind_and_records_its_outcome(
    haproxy_factory: Callable[..., RunningHAProxy],
    haproxy_version: HAProxyBinary,
    echo_port: int,
    db: Database,
    tmp_path: Path,
) -> None:
    gate = haproxy_factory(agents_config(echo_port), binary=haproxy_version.path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(demo_policy_yaml(agents=True, ws_port=9))
    target = TargetConfig(
        name="t1",
        runtime_api=f"unix:{gate.workdir / 'admin.sock'}",
        master_api=f"unix:{gate.master_socket}",
    )
    settings = Settings(
        base_dir=tmp_path, database_url=db.url, targets=[target], policy_file=policy,
        live_session_sweep_seconds=1.0,
    )  # fmt: skip
    with db.write() as conn:  # Alice an agent, Carol a person: both in Automation only
        for key, owner in ((ALICE, "agent-a"), (CAROL, "user-c")):
            conn.execute(
                tables.map_entries.insert().values(
                    identity_key=key, value=",automation,", user_id=owner
                )
            )
    # '/api' takes engineering people and automation agents
    alice = ws(gate.port, ALICE, route="api", agent=True)
    carol = ws(gate.port, CAROL, route="api")
    bob = ws(gate.port, BOB, route="ws")  # no entry: deprovisioned
    stopping = threading.Event()
    cutter = SessionCutter(target, settings, db, Metrics(), stopping, lambda job: job())
    cutter.thread.start()
    try:
        assert seconds_until_closed(bob, 5.0) is not None, "the sweep did not cut Bob"
        assert seconds_until_closed(carol, 2.0) is not None, "a person judged as an agent"
        assert echoes(alice), "an agent judged by allow_groups"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            live = status_from_db(db, settings)[0]["live_sessions"]
            if live["cut"] == 2 and live["last_sweep"]:
                break
            time.sleep(0.05)
    finally:
        stopping.set()
        cutter.wake.set()
        cutter.thread.join(5)
    assert live["cut"] == 2 and live["since"] and live["last_cut"], live
    assert re.fullmatch(r"ok: [0-9]+ streams checked, [0-9]+ cut", live["last_sweep_result"])
    assert sorted((e["identity_key"], e["reason"]) for e in cut_events(db)) == [
        (BOB, "sweep"), (CAROL, "sweep"),
    ]  # fmt: skip
    assert echoes(alice)
    alice.close()
