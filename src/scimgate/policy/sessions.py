"""Live sessions: the HAProxy rules that remember which identity holds which stream, and
the pure rule deciding which of those streams an identity's new map value no longer allows.

HAProxy re-checks every HTTP request, but a WebSocket, a CONNECT tunnel or a long download
runs no rule after it was allowed (research round2/03-kill-sessions.md), and no HAProxy
filters ``show sess`` by identity. So every allowed identity-gated request tracks a string
key ``<kind>|<identity key>|<route>|<frontend>|<client ip:port>`` in the
``scimgate_sessions`` stick table: the entry is in use (``use=1``) while the stream lives,
and the sync engine reads it back (``show table``) to find the client address whose stream
(``show sess`` ``src=``) it must shut when the identity loses the route.

``<kind>`` is ``a`` when HAProxy let the request in as an agent's (``render_agents``: the
token was an agent's, so ``allow_agents`` decided) and ``p`` as a person's (``allow_groups``
decided). It is recorded by HAProxy itself, at the request that opened the stream, because
neither side can tell it later for sure: an agent's map value carries ``at-<type>`` only
when some route allows that type (an agent in no group has the value ``,``, as a person in
no group has), and a deprovisioned agent has no store row left to look up.

Does: render those rules and the table; parse a tracked key; say whether a map value still
allows a route (the same test the rendered ACLs make).
Does not: talk to HAProxy (``haproxy.sessions``), or decide when to cut (``sync.sessions``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scimgate.policy.agents_model import AGENT_TYPE_PREFIX
from scimgate.policy.compiler import NOT_BEFORE_MARK, OVERLAY_TOMBSTONE
from scimgate.policy.model import ANY_GROUP, Policy, Route
from scimgate.policy.render_agents import AGENT_ACL, agents_of
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
#: kind (1) + 64 hex + route + frontend + [IPv6]:port + 4 separators: routes and
#: frontends are short in practice (a longer key is truncated, no longer parses, and is not
#: cut: keep names under ~40 characters each).
SESSIONS_KEY_LEN = 192
SEPARATOR = "|"
#: ``<kind>`` of a tracked key: let in as a person's / as an agent's request.
PERSON, AGENT = "p", "a"

# The kind is optional: keys tracked by a configuration rendered before it existed (an
# HAProxy not re-rendered since an upgrade) carry none; route_allows is then conservative.
_TRACKED_RE = re.compile(
    r"(?:(?P<kind>[ap])\|)?(?P<key>[0-9A-F]{64})\|(?P<route>[a-z0-9][a-z0-9_-]{0,63})\|"
    r"(?P<frontend>[A-Za-z][A-Za-z0-9_.-]{0,63})\|"
    r"(?P<client>[0-9A-Fa-f.:]{3,45}:[0-9]{1,5})"
)


@dataclass(frozen=True)
class TrackedStream:
    """A tracked key, parsed: who (pseudonym key, and whether HAProxy let it in as a
    person's or an agent's: ``kind``, None on a key without one), where (route, frontend),
    which connection (client ``ip:port``, as ``show sess`` prints it in ``src=``)."""

    identity_key: str
    route: str
    frontend: str
    client: str
    kind: str | None = None


def parse_tracked(text: str) -> TrackedStream | None:
    """A ``scimgate_sessions`` key, or None when it is not one of ours (never trusted
    further: a key that does not parse is not acted on)."""
    m = _TRACKED_RE.fullmatch(text)
    if m is None:
        return None
    return TrackedStream(m["key"], m["route"], m["frontend"], m["client"], m["kind"])


def tracking_rules(policy: Policy | None = None) -> list[str]:
    """The last ``http-request`` rules of an allowed identity-gated request (open routes
    left earlier with ``allow``): remember its stream under kind, identity, route and
    client (with agents in the policy, a second format for a request let in as an agent's)."""

    def tracked(kind: str) -> str:
        return (
            f'http-request set-var-fmt({V_SESSION}) "{kind}{SEPARATOR}%[var({V_KEY})]'
            f'{SEPARATOR}%[var({V_ROUTE})]{SEPARATOR}%f{SEPARATOR}%ci:%cp"'
        )

    agents = policy is not None and agents_of(policy) is not None
    return [
        "# --- scimgate: live sessions (kind | identity key | route | frontend | client),",
        "# tracked while the stream lives, so a deprovisioning can shut its tunnels ---",
        tracked(PERSON),
        *([f"{tracked(AGENT)} if {AGENT_ACL}"] if agents else []),
        f"http-request track-sc{SESSIONS_SC} var({V_SESSION}) table {SESSIONS_TABLE}",
    ]


def sessions_table() -> str:
    return (
        f"stick-table type string len {SESSIONS_KEY_LEN} size {SESSIONS_SIZE} "
        f"expire {SESSIONS_EXPIRE}"
    )


def route_allows(
    policy: Policy, route_name: str, value: str | None, kind: str | None = PERSON
) -> bool:
    """Whether an identity whose map value is ``value`` (None: no entry) may still use the
    route, as HAProxy's rendered rules decide it for a request of that ``kind``:

    * unknown (no entry, the overlay tombstone, not ``,``-wrapped): nobody
      (``unknown_identity``); a route the policy no longer has, or an open one: not ours;
    * a person (``render_routes``): ``allow_groups`` holds ``any`` or one of the value's
      groups (no ``allow_groups``: an agents-only route, ``group_denied``);
    * an agent (``render_agents``, only when the policy reads agent tokens): ``allow_agents``
      holds ``any`` or one of its groups or ``at-<type>`` (none: ``agent_denied``);
    * ``kind`` None (a key tracked without one): allowed when either kind would be, so a
      stream HAProxy may have let in is never cut on a guess.

    The groups are the value's part before the token cut-off's ``@<not-before>``
    (HAProxy's ``field(1,@)``). Scopes are the token's, not the map value's: unchanged by a
    SCIM write, so not judged here."""
    if value is None or value == OVERLAY_TOMBSTONE or not value.startswith(","):
        return False
    route = next((r for r in policy.routes if r.name == route_name), None)
    if route is None or route.is_open:
        return False
    groups = value.split(NOT_BEFORE_MARK, 1)[0]
    if agents_of(policy) is None:  # no agent tokens are read: every request is a person's
        return _holds(route.allow_groups, groups)
    if kind == AGENT:
        return _agent_allowed(route, groups)
    if kind == PERSON:
        return _holds(route.allow_groups, groups)
    return _holds(route.allow_groups, groups) or _agent_allowed(route, groups)


def _holds(allowed: list[str], groups: str) -> bool:
    return ANY_GROUP in allowed or any(f",{slug}," in groups for slug in allowed)


def _agent_allowed(route: Route, groups: str) -> bool:
    allow = route.allow_agents
    if allow is None:
        return False
    return _holds(allow.groups, groups) or any(
        f",{AGENT_TYPE_PREFIX}{t}," in groups for t in allow.types
    )
