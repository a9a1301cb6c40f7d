"""Access review (pure): for every route, who can reach it and through which group.

Does: one row per (route, identity that can reach it): people through ``allow_groups``,
agents through ``allow_agents`` (a policy group of their IdP groups, or their
``agentType``), and one row for an open route (``public: true``: anyone;
``allow_sources``: anyone from those networks); rendered as Markdown, CSV or JSON.
Does not: read the store or the trail (callers pass a ``DirectoryState``).

The ``kind`` column tells the rows apart: ``user``, ``agent``, ``public`` or ``sources``.
``user_id`` / ``user_name`` keep their names (consumers of the CSV and JSON read them) and
hold the agent's id and name on an agent row; an open route's row has no id and names
``anyone`` or ``from <networks>``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass

from scimgate.audit.replay import DirectoryState, GroupState
from scimgate.policy.agents import agent_type_slug
from scimgate.policy.agents_model import AGENT_TYPE_PREFIX
from scimgate.policy.model import ANY_GROUP, Policy, Route

COLUMNS = ("route", "path_prefix", "kind", "user_id", "user_name", "via", "requires_scopes")


@dataclass(frozen=True)
class AccessRow:
    route: str
    path_prefix: str
    kind: str  # "user", "agent", "public" or "sources"
    user_id: str  # the person's or agent's id; "" for an open route
    user_name: str  # userName, the agent's name, "anyone" or "from <networks>"
    via: str  # "any active user", "IdP group → policy group", "agentType t → at-t", …
    requires_scopes: str


def _group_via(groups: list[GroupState], slugs: list[str], policy: Policy) -> list[str]:
    via: list[str] = []
    for group in groups:
        for slug in slugs:
            pg = policy.groups.get(slug)
            if pg and (group.display_name in pg.idp_groups or group.external_id in pg.idp_groups):
                via.append(f"{group.display_name} → {slug}")
    return via


def _open_row(route: Route) -> AccessRow | None:
    if route.public:
        return AccessRow(route.name, route.from_.path_prefix, "public", "", "anyone",
                         "public: true", "")  # fmt: skip
    if route.allow_sources:
        nets = ", ".join(str(n) for n in route.allow_sources)
        return AccessRow(route.name, route.from_.path_prefix, "sources", "", f"from {nets}",
                         "allow_sources", "")  # fmt: skip
    return None


def _user_rows(state: DirectoryState, policy: Policy, route: Route) -> list[AccessRow]:
    rows: list[AccessRow] = []
    scopes = " ".join(route.require_scopes)
    for uid, user in sorted(state.users.items(), key=lambda kv: kv[1].user_name.lower()):
        if not user.active:
            continue
        via = ["any active user"] if ANY_GROUP in route.allow_groups else []
        via += _group_via(state.groups_of(uid), route.allow_groups, policy)
        if via:
            rows.append(AccessRow(route.name, route.from_.path_prefix, "user", uid,
                                  user.user_name, "; ".join(sorted(set(via))), scopes))  # fmt: skip
    return rows


def _agent_rows(state: DirectoryState, policy: Policy, route: Route) -> list[AccessRow]:
    """Agents get entries only when the policy has ``identity.agents`` (``policy.agents``),
    and none while inactive or suspended (their owners gone)."""
    allow = route.allow_agents
    if allow is None or policy.identity.agents is None:
        return []
    rows: list[AccessRow] = []
    scopes = " ".join(route.require_scopes)
    for aid, agent in sorted(state.agents.items(), key=lambda kv: (kv[1].name.lower(), kv[0])):
        if not agent.active or state.suspended(aid):
            continue
        via = ["any active agent"] if ANY_GROUP in allow.groups else []
        via += _group_via(state.groups_of(aid), allow.groups, policy)
        slug = agent_type_slug(agent.agent_type) if agent.agent_type else None
        if slug is not None and slug[len(AGENT_TYPE_PREFIX) :] in allow.types:
            via.append(f"agentType {agent.agent_type} → {slug}")
        if via:
            rows.append(AccessRow(route.name, route.from_.path_prefix, "agent", aid,
                                  agent.name, "; ".join(sorted(set(via))), scopes))  # fmt: skip
    return rows


def access_rows(state: DirectoryState, policy: Policy) -> list[AccessRow]:
    """Per route in policy order: its open row, then people by name, then agents by name."""
    rows: list[AccessRow] = []
    for route in policy.routes:
        open_row = _open_row(route)
        if open_row is not None:
            rows.append(open_row)
            continue
        rows += _user_rows(state, policy, route)
        rows += _agent_rows(state, policy, route)
    return rows


def render(rows: list[AccessRow], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2, ensure_ascii=False)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([getattr(r, c) for c in COLUMNS])
        return buf.getvalue()
    lines = ["| route | path | kind | who | via | scopes |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r.route} | `{r.path_prefix}` | {r.kind} | {r.user_name} | {r.via} "
        f"| {r.requires_scopes or '-'} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
