"""Live sessions: the HAProxy rules that remember which identity holds which stream, and
the pure rule deciding which of those streams an identity's new map value no longer allows.

HAProxy re-checks every HTTP request, but a WebSocket, a CONNECT tunnel or a long download
runs no rule after it was allowed (research round2/03-kill-sessions.md), and no HAProxy
filters ``show sess`` by identity. So every allowed identity-gated request tracks a string
key ``<identity key>|<route>|<frontend>|<client ip:port>`` in the ``scimgate_sessions``
stick table: the entry is in use (``use=1``) while the stream lives, and the sync engine
reads it back (``show table``) to find the client address whose stream (``show sess``
``src=``) it must shut when the identity loses the route.

Does: render those rules and the table; parse a tracked key; say whether a map value still
allows a route (the same test the rendered ACLs make).
Does not: talk to HAProxy (``haproxy.sessions``), or decide when to cut (``sync.sessions``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scimgate.policy.compiler import OVERLAY_TOMBSTONE
from scimgate.policy.model import ANY_GROUP, Policy
from scimgate.policy.render_base import V_KEY, V_ROUTE

SESSIONS_TABLE = "scimgate_sessions"
#: The stick counter the tracking rule uses (the verified-token cache uses sc2).
SESSIONS_SC = 1
V_SESSION = "txn.scimgate_session"
#: Entries: one per live identity-gated stream (an idle one expires after SESSIONS_EXPIRE;
#: one in use never does). A full table tracks no new stream: size it above the peak of
#: concurrent streams (about 250 bytes each).
SESSIONS_SIZE = "200k"
SESSIONS_EXPIRE = "10s"
#: 64 hex + route (64) + frontend (64) + [IPv6]:port + 3 separators
SESSIONS_KEY_LEN = 192
SEPARATOR = "|"

_TRACKED_RE = re.compile(
    r"(?P<key>[0-9A-F]{64})\|(?P<route>[a-z0-9][a-z0-9_-]{0,63})\|"
    r"(?P<frontend>[A-Za-z][A-Za-z0-9_.-]{0,63})\|"
    r"(?P<client>[0-9A-Fa-f.:]{3,45}:[0-9]{1,5})"
)


@dataclass(frozen=True)
class TrackedStream:
    """A tracked key, parsed: who (pseudonym key), where (route, frontend), which
    connection (client ``ip:port``, as ``show sess`` prints it in ``src=``)."""

    identity_key: str
    route: str
    frontend: str
    client: str


def parse_tracked(text: str) -> TrackedStream | None:
    """A ``scimgate_sessions`` key, or None when it is not one of ours (never trusted
    further: a key that does not parse is not acted on)."""
    m = _TRACKED_RE.fullmatch(text)
    if m is None:
        return None
    return TrackedStream(m["key"], m["route"], m["frontend"], m["client"])


def tracking_rules() -> list[str]:
    """The last ``http-request`` rules of an allowed identity-gated request (open routes
    left earlier with ``allow``): remember its stream under identity, route and client."""
    return [
        "# --- scimgate: live sessions (identity key | route | frontend | client), tracked",
        "# while the stream lives, so a deprovisioning can shut its tunnels ---",
        f'http-request set-var-fmt({V_SESSION}) "%[var({V_KEY})]{SEPARATOR}'
        f'%[var({V_ROUTE})]{SEPARATOR}%f{SEPARATOR}%ci:%cp"',
        f"http-request track-sc{SESSIONS_SC} var({V_SESSION}) table {SESSIONS_TABLE}",
    ]


def sessions_table() -> str:
    return (
        f"stick-table type string len {SESSIONS_KEY_LEN} size {SESSIONS_SIZE} "
        f"expire {SESSIONS_EXPIRE}"
    )


def route_allows(policy: Policy, route_name: str, value: str | None) -> bool:
    """Whether an identity whose map value is ``value`` (None: no entry) may still use the
    route: known (``,``-wrapped slugs, not the tombstone) and, unless the route takes
    ``any`` active user, holding one of its groups. A route the policy no longer has
    allows nobody."""
    if value is None or value == OVERLAY_TOMBSTONE or not value.startswith(","):
        return False
    route = next((r for r in policy.routes if r.name == route_name), None)
    if route is None or route.is_open:
        return False
    if ANY_GROUP in route.allow_groups:
        return True
    return any(f",{slug}," in value for slug in route.allow_groups)
