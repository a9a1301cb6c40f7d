"""`scimgate audit user`: one person's (or one agent's) story from the audit trail, with the
time each HAProxy target enforced each change.

An agent is found by its id, ``name``, ``agentUserName`` or ``subject`` (in the store, else
in the trail: a deleted agent still has its story) when no person matches; its story has
its own writes, its groups, the owner cascades that suspended or restored it (named by the
owner) and the applications that linked or unlinked it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.audit.log import iter_events
from scimgate.audit.replay import DirectoryState, apply_event
from scimgate.store import tables


def _ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


def _find_user_id(conn: Connection, identity: str) -> str | None:
    u = tables.users
    ident = identity.strip().lower()
    row = conn.execute(
        sa.select(u.c.id).where(sa.or_(u.c.id == identity, u.c.user_name_lower == ident))
    ).first()
    if row is not None:
        return str(row.id)
    # Deleted users (and e-mail identities) are found in the trail: the newest match wins.
    found: str | None = None
    for ev in iter_events(conn):
        if ev["kind"] != "scim.write" or ev["resource_type"] != "User":
            continue
        if ev["resource_id"] == identity:
            found = identity
            continue
        detail = ev["detail"] or {}
        res = detail.get("resource") or {}
        names = {str(res.get("userName", "")).lower(), str(detail.get("userName", "")).lower()}
        names |= {
            str(e.get("value", "")).lower() for e in res.get("emails") or [] if isinstance(e, dict)
        }
        changed = detail.get("changed", {})
        if "userName" in changed:
            names |= {str(v).lower() for v in changed["userName"] if v}
        if "emails" in changed:  # old and new addresses both identify the person
            names |= {
                str(e.get("value", "")).lower()
                for v in changed["emails"]
                for e in v or []
                if isinstance(e, dict)
            }
        if ident in names:
            found = ev["resource_id"]
    return found


def _agent_names(res: dict[str, Any]) -> set[str]:
    return {str(res.get(k) or "").lower() for k in ("name", "agentUserName", "subject")} - {""}


def _find_agent_id(conn: Connection, identity: str) -> str | None:
    a = tables.agents
    ident = identity.strip().lower()
    row = conn.execute(
        sa.select(a.c.id).where(
            sa.or_(
                a.c.id == identity,
                a.c.name_lower == ident,
                a.c.agent_user_name_lower == ident,
                a.c.subject == identity.strip(),
            )
        )
    ).first()
    if row is not None:
        return str(row.id)
    found: str | None = None  # a deleted agent: the newest match in the trail wins
    for ev in iter_events(conn):
        if ev["kind"] != "scim.write" or ev["resource_type"] != "Agent":
            continue
        detail = ev["detail"] or {}
        names = _agent_names(detail.get("resource") or {}) | {str(detail.get("name", "")).lower()}
        for attr in ("name", "agentUserName", "subject"):
            names |= {str(v).lower() for v in (detail.get("changed") or {}).get(attr, []) if v}
        if ev["resource_id"] == identity or ident in names:
            found = ev["resource_id"]
    return found


def _describe_agent_write(op: Any, detail: dict[str, Any]) -> tuple[list[str], str | None]:
    """What an agent's own write did, and its new name (when it has one)."""
    if op == "create":
        res = detail.get("resource", {})
        kind = f", agentType {res['agentType']}" if res.get("agentType") else ""
        owners = len(res.get("owners") or [])
        return [
            f"created as agent {res.get('name')} (active={res.get('active', True)}{kind}, "
            f"{owners} owner(s))"
        ], res.get("name")
    if op == "delete":
        return [
            f"deleted (removed from {len(detail.get('removed_from_groups', []))} group(s))"
        ], None
    changed = detail.get("changed", {})
    out: list[str] = []
    for attr, (old, new) in changed.items():
        if attr == "active":
            out.append("deactivated" if str(new).lower() == "false" else "reactivated")
        elif attr in ("name", "agentType", "parent"):
            out.append(f"{attr} {_short(old)} → {_short(new)}")
        else:
            out.append(f"{attr} changed")
    name = changed["name"][1] if "name" in changed else None
    return out, name


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("value") or "-")
    return "-" if value is None else str(value)


def _agent_events(uid: str, ev: dict[str, Any], detail: dict[str, Any]) -> list[str]:
    """An owner cascade or an application write that touched this agent."""
    if ev["kind"] == "agent.owner_cascade":
        mine = [a for a in detail.get("agents") or [] if a.get("id") == uid]
        if not mine:
            return []
        owner = detail.get("owner") or {}
        state = "suspended" if mine[0].get("suspended") else "not suspended"
        return [
            f"{state}: owner {owner.get('type', '?')} {owner.get('id')} {str(ev['operation']).removeprefix('owner_')}"
        ]
    if ev["kind"] == "scim.write" and ev["resource_type"] == "AgenticApplication":
        linked = uid in (detail.get("agents_changed") or []) or uid in (detail.get("agents") or [])
        created = uid in [
            a.get("value") for a in (detail.get("resource") or {}).get("agents") or []
        ]
        if linked or created:
            return [f"application {ev['resource_id']} {ev['operation']} (its agents changed)"]
    return []


def _describe_user_change(changed: dict[str, Any]) -> list[str]:
    out = []
    for attr, (old, new) in changed.items():
        if attr == "active":
            out.append("deactivated" if str(new).lower() == "false" else "reactivated")
        elif attr == "userName":
            out.append(f"userName {old} → {new}")
        else:
            out.append(f"{attr} changed")
    return out


def user_story(conn: Connection, identity: str) -> dict[str, Any] | None:
    """The story of the person ``identity`` names, else of the agent it names (``kind``)."""
    kind = "user"
    uid = _find_user_id(conn, identity)
    if uid is None:
        kind, uid = "agent", _find_agent_id(conn, identity)
    if uid is None:
        return None
    targets = [r[0] for r in conn.execute(sa.select(tables.targets.c.name))]
    applied: dict[int, dict[str, str]] = {}
    for seq, target, when in conn.execute(sa.select(tables.confirmations)):
        applied.setdefault(int(seq), {})[target] = when
    events = list(iter_events(conn))
    # A change is enforced on a target by the sync.applied batch that covers its seq, or by
    # a full resync whose snapshot includes it (confirmations only cover deprovisions).
    batches: list[tuple[int, int, str, str]] = []
    for ev in events:
        d = ev["detail"] or {}
        target, when = d.get("target"), d.get("applied") or ev["ts"]
        if not isinstance(target, str):
            continue
        if ev["kind"] == "sync.applied":
            # A group-committed record lists each batch with its own time.
            for lo, hi, at in d.get("batches") or [(d.get("first_seq"), d.get("last_seq"), when)]:
                if isinstance(lo, int) and isinstance(hi, int) and isinstance(at, str):
                    batches.append((lo, hi, target, at))
        elif ev["kind"] == "sync.resync" and isinstance(d.get("seq"), int):
            batches.append((1, d["seq"], target, when))

    def enforced_at(seq: int) -> dict[str, str]:
        out = dict(applied.get(seq, {}))
        for lo, hi, target, when in batches:
            if lo <= seq <= hi and (target not in out or when < out[target]):
                out[target] = when
        return out

    state = DirectoryState()
    timeline: list[dict[str, Any]] = []
    narrated: set[int] = set()  # the seqs of the map changes already in the timeline
    user_name = identity
    for ev in events:
        what: list[str] = []
        detail = ev["detail"] or {}
        if ev["kind"] == "scim.write":
            if ev["resource_type"] == "User" and ev["resource_id"] == uid:
                op = ev["operation"]
                if op == "create":
                    res = detail.get("resource", {})
                    user_name = res.get("userName", user_name)
                    what.append(f"created as {user_name} (active={res.get('active', True)})")
                elif op in ("patch", "replace"):
                    changed = detail.get("changed", {})
                    what += _describe_user_change(changed)
                    if "userName" in changed:  # the story is headed by the latest name
                        user_name = changed["userName"][1]
                elif op == "delete":
                    what.append(
                        f"deleted (removed from {len(detail.get('removed_from_groups', []))} group(s))"
                    )
            elif ev["resource_type"] == "Agent" and ev["resource_id"] == uid:
                said, new_name = _describe_agent_write(ev["operation"], detail)
                what += said
                user_name = new_name or user_name
            elif ev["resource_type"] == "Group":
                group = state.groups.get(ev["resource_id"])
                name = (detail.get("resource") or {}).get("displayName") or (
                    group.display_name if group else "?"
                )
                if uid in (detail.get("members_added") or []) or uid in (
                    (detail.get("resource") or {}).get("members") or []
                ):
                    what.append(f"added to group {name}")
                if uid in (detail.get("members_removed") or []):
                    what.append(f"removed from group {name}")
                if ev["operation"] == "delete" and group and uid in group.members:
                    what.append(f"group {group.display_name} deleted (membership ended)")
            if kind == "agent":
                what += _agent_events(uid, ev, detail)
            apply_event(state, ev)
        elif kind == "agent" and ev["kind"] == "agent.owner_cascade":
            what += _agent_events(uid, ev, detail)
        elif ev["resource_id"] == uid and ev["kind"] != "sync.applied":
            what.append(ev["kind"])
        # An owner cascade names the agent of each change ``agent_id``.
        changes = [
            c
            for c in detail.get("map_changes", [])
            if c.get("user_id") == uid or c.get("agent_id") == uid
        ]
        if not what and changes and kind == "agent" and ev["resource_type"] == "Agent":
            # a write of an agent above it (a parent up the chain) moved its entries
            said, _ = _describe_agent_write(ev["operation"], detail)
            what.append(f"parent line: agent {ev['resource_id']} {'; '.join(said)}")
        if not what and not changes:
            continue
        if not what and kind == "agent" and all(int(c["seq"]) in narrated for c in changes):
            continue  # the owner's write repeats what its cascade event already said
        narrated.update(int(c["seq"]) for c in changes)
        if not what:
            what.append("HAProxy entries recomputed")
        line: dict[str, Any] = {
            "ts": ev["ts"],
            "seq": ev["seq"],
            "what": "; ".join(what),
            "actor": ev["actor"],
        }
        if changes:
            line["map_changes"] = changes
            enforced: dict[str, str] = {}
            for c in changes:
                for target, when in enforced_at(int(c["seq"])).items():
                    enforced[target] = max(enforced.get(target, when), when)
            line["enforced"] = [
                {
                    "target": t,
                    "applied": w,
                    "after_ms": (_ts(w) - _ts(ev["ts"])).total_seconds() * 1000,
                }
                for t, w in sorted(enforced.items())
            ]
            line["unconfirmed"] = [t for t in targets if t not in enforced]
        timeline.append(line)
    return {"kind": kind, "user_id": uid, "user_name": user_name, "timeline": timeline}
