"""Rendered rules of a fleet node in strict mode (docs/fleet.md, "Strict mode"): HAProxy
fails closed by itself when its agent stops vouching for it.

The node's agent refreshes one entry of a stick table (``set table ... key 1``) only while
it is caught up with the change log; the table's ``expire`` is the strict-mode threshold.
When the entry is gone (the agent is dead, partitioned from the database, or behind), every
identity-gated request is denied (403, decision ``node_stale``) until the agent refreshes it
again. Open routes are matched before this rule and are not affected. A dead agent cannot
flip anything, which is the point: the default is deny, the agent's refresh is the exception.

Measured on HAProxy 2.6.12 here: ``set table`` on an existing entry re-arms its expiry;
without a refresh the entry is gone ``expire`` after the last one; ``in_table`` on an
absent key is false; a reload starts with an empty table (denied until the agent's next
refresh, at most one heartbeat interval).
"""

from __future__ import annotations

from scimgate.policy.render_base import deny

FLEET_HEARTBEAT_TABLE = "scimgate_fleet_heartbeat"
HEARTBEAT_KEY = 1
#: The agent's refresh command: fixed text, nothing from a client in it.
HEARTBEAT_COMMAND = f"set table {FLEET_HEARTBEAT_TABLE} key {HEARTBEAT_KEY} data.gpc0 1"


def heartbeat_table(expire_seconds: int) -> str:
    """The table line of the heartbeat backend (one entry, expiring after the threshold)."""
    return f"stick-table type integer size 1 expire {expire_seconds}s store gpc0"


def strict_rules() -> list[str]:
    """Right after the open routes: identity-gated requests need a fresh heartbeat entry."""
    return [
        "",
        "# --- scimgate: strict mode: identity-gated routes only while the agent vouches ---",
        "# (its heartbeat entry expires after the strict-mode threshold; docs/fleet.md)",
        *deny(403, "node_stale", f"!{{ int({HEARTBEAT_KEY}),in_table({FLEET_HEARTBEAT_TABLE}) }}"),
    ]
