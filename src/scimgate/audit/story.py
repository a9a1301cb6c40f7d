"""`scimgate audit user`: one person's story from the audit trail, with the time each HAProxy
target enforced each change."""

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
    uid = _find_user_id(conn, identity)
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
            apply_event(state, ev)
        elif ev["resource_id"] == uid and ev["kind"] != "sync.applied":
            what.append(ev["kind"])
        changes = [c for c in detail.get("map_changes", []) if c.get("user_id") == uid]
        if not what and not changes:
            continue
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
    return {"user_id": uid, "user_name": user_name, "timeline": timeline}
