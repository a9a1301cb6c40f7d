"""What the admin console shows, as use cases: the HAProxy targets with their alerts and
propagation latency, people and groups with the access the policy gives them and why, the
access review, audit events and the chain's status, the active policy.

Does: open the reads (``store.console_reads``, ``audit``, ``app.targets``) and join them
with the policy (which IdP group feeds which policy group, which routes that opens).
Does not: HTML, HTTP or sessions (``scimgate.console``); SQL text (``store``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scimgate.app.targets import target_status
from scimgate.audit import log as audit
from scimgate.audit.replay import DirectoryState, GroupState, UserState, replay
from scimgate.audit.report import AccessRow, access_rows, render
from scimgate.audit.story import user_story
from scimgate.config import Settings
from scimgate.policy.model import ANY_GROUP, Policy, load_policy
from scimgate.store import console_reads as reads
from scimgate.store.db import Database

# The store handle the console holds and hands back to these use cases (it never opens a
# transaction itself: house rule "the console reads through use cases").
StoreHandle = Database

PAGE = 50
TS = "%Y-%m-%dT%H:%M:%S.%fZ"


def _ts(text: str) -> datetime:
    return datetime.strptime(text, TS).replace(tzinfo=UTC)


def _iso(dt: datetime) -> str:
    return dt.strftime(TS)


def load_active_policy(settings: Settings) -> Policy | None:
    return load_policy(settings.policy_file) if settings.policy_file is not None else None


# --- overview -----------------------------------------------------------------------------


@dataclass
class TargetView:
    name: str
    status: dict[str, Any]
    last_drift: dict[str, Any] | None
    alerts: list[str]
    # (seconds before now, latency ms) of each batch applied in the last hour
    latency: list[tuple[float, float]] = field(default_factory=list)


def overview(db: Database, settings: Settings, window: float = 3600.0) -> list[TargetView]:
    """Each target: its status (store + a live probe), last drift repair, open alerts and
    the propagation latency (change logged → applied) of each batch in the last ``window``
    seconds."""
    _ok, rows = target_status(db, settings)
    now = datetime.now(UTC)
    with db.read() as conn:
        drifts = reads.newest_events(conn, "sync.drift", 200)
        applied = reads.applied_since(conn, _iso(now - timedelta(seconds=window)))
    out: list[TargetView] = []
    for row in rows:
        name = row["target"]
        drift = next((d for d in drifts if (d["detail"] or {}).get("target") == name), None)
        alerts: list[str] = []
        if not row.get("reachable"):
            alerts.append(f"unreachable: {row.get('probe_error') or 'no answer'}")
        if row.get("last_error"):
            alerts.append(f"last error: {row['last_error']}")
        if row["oldest_unconfirmed_deprovision_age"] > settings.deprovision_alert_seconds:
            alerts.append(
                f"{row['unconfirmed_deprovisions']} deprovision(s) unconfirmed for "
                f"{row['oldest_unconfirmed_deprovision_age']:.0f} s"
            )
        elif row["behind_seconds"] > settings.deprovision_alert_seconds:
            alerts.append(f"{row['lag']} change(s) behind for {row['behind_seconds']:.0f} s")
        latency = [
            (
                (now - _ts(at)).total_seconds(),
                max(0.0, (_ts(at) - _ts(logged)).total_seconds() * 1000),
            )
            for target, at, logged in applied
            if target == name
        ]
        out.append(
            TargetView(
                name,
                row,
                {"ts": drift["ts"], **(drift["detail"] or {})} if drift else None,
                alerts,
                latency,
            )
        )
    return out


# --- people and groups --------------------------------------------------------------------


def people_counts(db: Database) -> tuple[int, int]:
    """(people, active people)."""
    with db.read() as conn:
        return reads.count_people(conn)


def people(db: Database, query: str, after: str) -> tuple[list[reads.PersonRow], tuple[int, int]]:
    with db.read() as conn:
        return reads.page_people(conn, query, after, PAGE), reads.count_people(conn)


@dataclass(frozen=True)
class Grant:
    """A route a person may reach, and through what: ``any active user`` or
    ``IdP group → policy group``."""

    route: str
    path_prefix: str
    via: str
    requires_scopes: str


def _grants(rows: list[AccessRow]) -> list[Grant]:
    return [Grant(r.route, r.path_prefix, r.via, r.requires_scopes) for r in rows]


@dataclass
class PersonView:
    person: reads.PersonRow
    groups: list[tuple[str, str, str | None]]
    grants: list[Grant]
    map_entries: int
    story: list[dict[str, Any]]


def trail_head(db: Database) -> int:
    """The newest audit event's seq: nothing a person page shows changes while it stands
    (every SCIM write and every confirmation appends an event)."""
    with db.read() as conn:
        return audit.head(conn)[0]


def summarise_story(timeline: list[dict[str, Any]]) -> None:
    """Each story line gets ``changes_summary``: how many identity keys it set and removed."""
    for line in timeline:
        changes = line.get("map_changes") or []
        removed = sum(1 for c in changes if c.get("value") is None)
        line["changes_summary"] = (
            f"{len(changes)} HAProxy map change(s): {len(changes) - removed} identity key(s) "
            f"set, {removed} removed"
            if changes
            else ""
        )


def person_view(
    db: Database, policy: Policy | None, user_id: str, *, story: bool = True
) -> PersonView | None:
    """One person now: their groups, the routes the policy opens to them (and why), how many
    identity keys HAProxy holds for them, and their story from the audit trail."""
    with db.read() as conn:
        row = reads.person(conn, user_id)
        if row is None:
            return None
        groups = reads.groups_of(conn, user_id)
        entries = reads.map_entry_count(conn, user_id)
        timeline = (user_story(conn, user_id) or {}).get("timeline", []) if story else []
    summarise_story(timeline)
    grants: list[Grant] = []
    if policy is not None:
        state = DirectoryState(users={row.id: UserState(row.user_name, row.active)})
        for gid, name, ext in groups:
            state.groups[gid] = GroupState(name, ext, {row.id})
        grants = _grants([r for r in access_rows(state, policy) if r.kind == "user"])
    return PersonView(row, groups, grants, entries, timeline)


def policy_groups_fed_by(
    policy: Policy | None, display_name: str, external_id: str | None
) -> list[str]:
    """The policy groups an IdP group feeds (by displayName or externalId)."""
    if policy is None:
        return []
    return [
        slug
        for slug, pg in policy.groups.items()
        if display_name in pg.idp_groups
        or (external_id is not None and external_id in pg.idp_groups)
    ]


def routes_opened_by(policy: Policy | None, slugs: list[str]) -> list[str]:
    if policy is None:
        return []
    return [r.name for r in policy.routes if any(s in r.allow_groups for s in slugs)]


def groups(db: Database, query: str, after: str) -> list[reads.GroupRow]:
    with db.read() as conn:
        return reads.page_groups(conn, query, after, PAGE)


@dataclass
class GroupView:
    group: reads.GroupRow
    members: list[reads.PersonRow]
    next_after: str  # the next page's cursor ("" at the end)
    policy_groups: list[str]
    routes: list[str]


def group_view(db: Database, policy: Policy | None, group_id: str, after: str) -> GroupView | None:
    with db.read() as conn:
        row = reads.group(conn, group_id)
        if row is None:
            return None
        members, next_after = reads.page_members(conn, group_id, after, PAGE)
    slugs = policy_groups_fed_by(policy, row.display_name, row.external_id)
    return GroupView(row, members, next_after, slugs, routes_opened_by(policy, slugs))


# --- access review ------------------------------------------------------------------------


@dataclass
class AccessMatrix:
    routes: list[str]
    # policy group → (IdP groups feeding it, {route: allowed})
    rows: list[tuple[str, list[str], dict[str, bool]]]
    any_user_routes: list[str]
    public_routes: list[str]
    #: route → what lets agents in (``allow_agents``): "any agent", policy groups, types
    agent_routes: dict[str, str] = field(default_factory=dict)


def access_matrix(policy: Policy) -> AccessMatrix:
    names = [r.name for r in policy.routes]
    rows = [
        (slug, list(pg.idp_groups), {r.name: slug in r.allow_groups for r in policy.routes})
        for slug, pg in policy.groups.items()
    ]
    return AccessMatrix(
        names,
        rows,
        [r.name for r in policy.routes if ANY_GROUP in r.allow_groups],
        [r.name for r in policy.routes if r.public],
        {
            r.name: ", ".join(
                ["any agent" if g == ANY_GROUP else g for g in r.allow_agents.groups]
                + [f"type {t}" for t in r.allow_agents.types]
            )
            for r in policy.routes
            if r.allow_agents is not None
        },
    )


def who_could_reach(db: Database, policy: Policy, route: str, at: str | None) -> list[AccessRow]:
    """Who can reach ``route`` (every route when empty) now, or could at ``at`` (the
    directory rebuilt from the audit trail, as `report access --at`), and through what."""
    with db.read() as conn:
        state: Any = replay(audit.iter_events(conn), until=at) if at else audit.current_state(conn)
    rows = access_rows(state, policy)
    return [r for r in rows if r.route == route] if route else rows


def access_csv(rows: list[AccessRow]) -> str:
    return render(rows, "csv")


# --- audit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainStatus:
    """The newest ``audit verify`` run from the console (an audited event itself)."""

    ran: str | None
    ok: bool | None
    events: int | None
    detail: str


def chain_status(db: Database) -> ChainStatus:
    with db.read() as conn:
        newest = reads.newest_events(conn, "audit.verified", 1)
    if not newest:
        return ChainStatus(None, None, None, "never verified from the console")
    d = newest[0]["detail"] or {}
    return ChainStatus(newest[0]["ts"], bool(d.get("ok")), d.get("events"), d.get("reason") or "")


def verify_chain_now(db: Database, actor: audit.Actor) -> ChainStatus:
    """Walk the whole chain, then record the result (who ran it, when) as an event."""
    with db.read() as conn:
        result = audit.verify(conn)
    detail = {
        "ok": result.ok,
        "events": result.events,
        "broken_seq": result.broken_seq,
        "reason": result.reason,
    }
    with db.write() as conn:
        audit.append(conn, "audit.verified", actor, detail=detail)
    return chain_status(db)


def events(db: Database, filters: dict[str, str], before_seq: int) -> list[dict[str, Any]]:
    with db.read() as conn:
        return reads.page_events(conn, before_seq=before_seq, limit=PAGE, **filters)


def record_console_action(
    db: Database, actor: audit.Actor, kind: str, detail: dict[str, Any]
) -> None:
    """An audit event for a console action that changes nothing else (an export)."""
    with db.write() as conn:
        audit.append(conn, kind, actor, detail=detail)


# --- policy -------------------------------------------------------------------------------

_SECRET_IN_CONFIG = re.compile(r"str\([A-Za-z0-9+/=]{16,}\)")


@dataclass(frozen=True)
class PolicyView:
    path: str | None
    text: str
    rendered: str
    rendered_from: str


def policy_view(settings: Settings) -> PolicyView:
    """The policy file as written and the HAProxy configuration the instance rendered from
    it (``DIR/haproxy/haproxy.cfg``), its pseudonym secret redacted."""
    path = settings.policy_file
    text = path.read_text() if path is not None and path.exists() else ""
    cfg = settings.base_dir / "haproxy" / "haproxy.cfg"
    rendered = cfg.read_text() if cfg.exists() else ""
    return PolicyView(
        str(path) if path else None,
        text,
        _SECRET_IN_CONFIG.sub("str(<redacted>)", rendered),
        str(cfg) if rendered else "",
    )


def policy_file_of(settings: Settings) -> Path | None:
    return settings.policy_file
