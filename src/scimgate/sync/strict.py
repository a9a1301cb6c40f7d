"""Strict mode, the agent's half (docs/fleet.md, "Strict mode"; the HAProxy half is
``policy.render_fleet``): vouch for the node by refreshing its heartbeat entry, but only
while the follower is caught up with the change log.

Does: decide whether the follower is fresh (it read the change log and had applied all of
it within ``fresh_within`` seconds), refresh the entry on a fresh connection (which reaches
the worker serving new requests, also right after a reload), and say whether the running
HAProxy has strict mode at all (the heartbeat table in ``show table``: the running HAProxy
decides, as it does for the map layout).
Does not: deny anything (HAProxy does, by itself, when the entry expires), or record the
transitions (the agent does, in the store).
"""

from __future__ import annotations

from scimgate.config import TargetConfig
from scimgate.haproxy import HAProxyRuntimeError, RuntimeClient
from scimgate.policy.render_fleet import FLEET_HEARTBEAT_TABLE, HEARTBEAT_COMMAND
from scimgate.sync.apply import ENTRY_VALIDATOR

TIMEOUT = 2.0


class StrictVoucher:
    """Used by one thread (the agent's strict-mode thread)."""

    def __init__(self, target: TargetConfig, *, fresh_within: float) -> None:
        self.target = target
        self.fresh_within = fresh_within

    def fresh(self, caught_up_at: float | None, now: float) -> bool:
        """Whether the follower was caught up with the change log recently (monotonic)."""
        return caught_up_at is not None and now - caught_up_at <= self.fresh_within

    def tick(self, caught_up_at: float | None, now: float) -> bool | None:
        """Refresh the heartbeat entry if fresh. True: refreshed; False: not fresh (no
        refresh: HAProxy fails closed once the entry expires); None: this HAProxy has no
        heartbeat table (strict mode off). Raises HAProxyRuntimeError/OSError when HAProxy
        does not answer (no refresh either)."""
        with RuntimeClient(
            self.target.runtime_api, TIMEOUT, validator=ENTRY_VALIDATOR, cli_timeout=None
        ) as client:
            tables = client.execute("show table")
            if f"table: {FLEET_HEARTBEAT_TABLE}," not in tables:
                return None
            if not self.fresh(caught_up_at, now):
                return False
            reply = client.execute(HEARTBEAT_COMMAND).strip()
            if reply:
                raise HAProxyRuntimeError(f"heartbeat refresh refused: {reply[:200]}")
        return True
