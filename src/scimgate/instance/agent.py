"""`scimgate agent`: the sync engine beside one HAProxy, following the shared change log.

The same engine as the one embedded in `scimgate serve` (``sync.engine.SyncEngine``, one
target: the local HAProxy's admin socket and master CLI, its map directory), with two
differences of wiring, because the writes happen in other processes (the API replicas):

- the wake-up: ``Database.on_commit`` only hears this process's writes, so a thread LISTENs
  for the change log's NOTIFY (``store.changefeed``) and nudges the follower; the follower's
  own poll (``change_poll_interval``) stays the guarantee;
- the report: every confirmation (and every ``heartbeat_interval``) the agent writes its node
  row (``store.nodes``: cursor, worker PID, HAProxy version, reachability, heartbeat), which
  the replicas read for read-your-writes, `scimgate status` and the lag alert.

Does: build and run one node's engine, the wake-up and heartbeat threads; stop on a signal.
Does not: serve HTTP (a node's agent has no API), or apply anything itself (``sync``).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from typing import Any

from scimgate.audit import log as audit
from scimgate.config import ConfigError, Settings, TargetConfig
from scimgate.haproxy import HAProxyRuntimeError
from scimgate.instance.database import open_database
from scimgate.metrics import Metrics
from scimgate.store import nodes
from scimgate.store.changefeed import ChangeWakeups
from scimgate.store.db import now_iso
from scimgate.sync.engine import SyncEngine
from scimgate.sync.strict import StrictVoucher
from scimgate.sync.threads import engine_thread

log = logging.getLogger("scimgate.agent")

BACKOFF_MIN, BACKOFF_MAX = 0.2, 5.0
ACK_SPACING = 0.005  # seconds: at most ~200 node-row writes per second under a burst
# Longest one LISTEN wait: bounds how long a stop waits for the listening thread (the
# wake-up itself comes with the notification, whatever this is).
LISTEN_WAIT = 0.5


def default_node_name() -> str:
    return socket.gethostname().split(".")[0] or "node"


def node_target(
    settings: Settings,
    node: str,
    *,
    runtime_api: str | None = None,
    master_api: str | None = None,
    map_dir: str | None = None,
) -> TargetConfig:
    """The node's one HAProxy target: given on the command line, or the config's single
    target (renamed to the node: confirmations and metrics are per node)."""
    if runtime_api is not None:
        return TargetConfig(node, runtime_api, master_api, map_dir)
    if len(settings.targets) != 1:
        raise ConfigError(
            f"{settings.config_path}: an agent drives one HAProxy: give --runtime-api "
            f"(and --master-api, --map-dir) or configure exactly one target, not "
            f"{len(settings.targets)}"
        )
    t = settings.targets[0]
    return TargetConfig(node, t.runtime_api, master_api or t.master_api, map_dir or t.map_dir)


class Agent:
    """One node's agent: its engine, its wake-ups, its beats."""

    def __init__(self, settings: Settings, target: TargetConfig) -> None:
        if not target.runtime_api.startswith("unix:"):
            # The admin socket is admin-level: an agent sits beside its HAProxy and never
            # needs it on the network (docs/fleet.md, deploy/systemd).
            log.warning(
                "agent: runtime API is not a unix socket", extra={"runtime_api": target.runtime_api}
            )
        self.node = target.name
        poll = settings.change_poll_interval
        if settings.strict_mode:
            # Vouching needs a recent read of the change log even when nothing changes.
            poll = min(poll, max(0.2, settings.strict_mode_seconds / 5))
        self.settings = dataclasses.replace(settings, targets=[target], change_poll_interval=poll)
        self.db = open_database(self.settings)
        self.metrics = Metrics()
        self.engine = SyncEngine.from_settings(self.settings, self.db, self.metrics)
        self.engine.on_advance(lambda _target, _cursor: self._ack.set())
        self.wakeups = ChangeWakeups(self.db)
        self._stop = threading.Event()
        self._ack = threading.Event()  # a confirmation to report (set by the follower)
        # Fresh: the follower read the whole change log within one poll and one heartbeat
        # (plus slack for a slow read). HAProxy therefore fails closed between N and
        # N + fresh_within seconds after the agent's last successful read (docs/fleet.md).
        self.voucher = StrictVoucher(target, fresh_within=poll + settings.heartbeat_interval + 0.5)
        # The strict-mode thread's own state: whether HAProxy is failing closed (None:
        # unknown or strict mode off), the last refresh, transitions not yet recorded.
        self._fail_closed: bool | None = None
        self._pending: list[dict[str, Any]] = []
        self._threads = [
            engine_thread(self._listen, "agent-listen"),
            engine_thread(self._beat_loop, "agent-beat"),
            engine_thread(self._strict_loop, "agent-strict"),
        ]

    @property
    def follower_view(self) -> nodes.NodeBeat:
        follower = self.engine.followers[0]
        return nodes.NodeBeat(
            self.node, self.engine.waiters.cursor(self.node), follower.worker_pid,
            follower.haproxy_version, follower.reachable, bool(self._fail_closed),
            follower.last_error,
        )  # fmt: skip

    def start(self) -> None:
        self.engine.start()
        try:
            nodes.beat(self.db, self.follower_view, started=True)
        except Exception:
            log.warning("agent: first beat failed (database away?)", exc_info=True)
        for thread in self._threads:
            thread.start()
        log.info(
            "agent started",
            extra={"node": self.node, "runtime_api": self.settings.targets[0].runtime_api},
        )

    def stop(self) -> None:
        self._stop.set()
        self._ack.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(5.0)
        self.engine.stop()
        try:
            # A clean stop leaves the fleet at once: writes stop waiting for this node.
            nodes.mark_stopped(self.db, self.node)
        except Exception:
            log.warning("agent: could not record its stop", exc_info=True)
        self.db.dispose()

    # ---- threads

    def _listen(self) -> None:
        """LISTEN for commits; each notification nudges the follower. Errors back off: the
        follower's poll keeps the node converging meanwhile."""
        backoff = BACKOFF_MIN
        try:
            while not self._stop.is_set():
                try:
                    if self.wakeups.wait(LISTEN_WAIT):
                        self.engine.notify([])
                    backoff = BACKOFF_MIN
                except Exception as exc:
                    log.warning(
                        "agent: LISTEN failed", extra={"node": self.node, "error": str(exc)}
                    )
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self.wakeups.close()  # by its one user: a wait in progress holds the connection

    def _beat_loop(self) -> None:
        while not self._stop.is_set():
            self._ack.wait(self.settings.heartbeat_interval)
            self._ack.clear()
            if self._stop.is_set():
                return
            try:
                nodes.beat(self.db, self.follower_view)
            except Exception as exc:
                log.warning("agent: beat failed", extra={"node": self.node, "error": str(exc)})
                self._stop.wait(BACKOFF_MIN)
                continue
            self._stop.wait(ACK_SPACING)

    def _strict_loop(self) -> None:
        """Vouch for the node while caught up; notice and record when HAProxy fails closed
        (the entry expired: strict_mode_seconds since the last refresh) and when it opens
        again. A transition seen while the database is away is recorded once it is back."""
        follower = self.engine.followers[0]
        threshold = self.settings.strict_mode_seconds
        last_refresh = time.monotonic()  # HAProxy may hold a fresh entry from before
        wait = 0.0  # the first look at once: a fresh HAProxy denies until the first refresh
        while not self._stop.wait(wait):
            wait = self.settings.heartbeat_interval
            now = time.monotonic()
            try:
                vouched = self.voucher.tick(follower.caught_up_at, now)
            except (HAProxyRuntimeError, OSError) as exc:
                log.warning("agent: heartbeat refresh failed", extra={"node": self.node,
                                                                       "error": str(exc)})  # fmt: skip
                vouched = False
            if vouched is None:
                self._fail_closed = None  # strict mode off in this HAProxy's config
                continue
            if vouched:
                last_refresh = now
            closed = now - last_refresh >= threshold
            if closed != self._fail_closed:
                if self._fail_closed is not None or closed:
                    self._transition(closed, now - last_refresh)
                self._fail_closed = closed
                self._ack.set()  # the node row shows it at once
            self._record_pending()

    def _transition(self, closed: bool, stale_for: float) -> None:
        kind = "node.fail_closed" if closed else "node.fail_open"
        detail = {"node": self.node, "at": now_iso(), "stale_seconds": round(stale_for, 3),
                  "cursor": self.engine.waiters.cursor(self.node)}  # fmt: skip
        if closed:
            log.warning("agent: strict mode: HAProxy fails closed (agent not caught up)",
                        extra=detail)  # fmt: skip
        else:
            log.info("agent: strict mode: caught up, identity-gated routes open again",
                     extra=detail)  # fmt: skip
        self._pending.append({"kind": kind, "detail": detail})

    def _record_pending(self) -> None:
        if not self._pending:
            return
        try:
            with self.db.write(background=True) as conn:
                for event in self._pending:
                    # The event's time is its recording; when it happened is detail["at"].
                    audit.append(conn, event["kind"], operation="strict_mode",
                                 detail=event["detail"])  # fmt: skip
        except Exception as exc:
            log.warning("agent: transition not recorded yet", extra={"node": self.node,
                                                                      "error": str(exc)})  # fmt: skip
            return
        self._pending.clear()


def run_agent(settings: Settings, target: TargetConfig) -> None:
    """`scimgate agent`: run until SIGTERM/SIGINT (unwinding through ``finally``)."""
    from scimgate import logs
    from scimgate.instance.serve import Stop, unwind_on_signals

    unwind_on_signals()
    logs.setup(settings.log_level)
    agent = Agent(settings, target)
    try:
        agent.start()
        stop = threading.Event()
        while not stop.wait(3600):
            pass
    except Stop:
        pass
    finally:
        agent.stop()
