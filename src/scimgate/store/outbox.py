"""Desired HAProxy state and its change log (the outbox), written in the SCIM write's own
transaction: a 2xx SCIM response means the HAProxy effect is durable and on its way."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.store import resources, tables
from scimgate.store.db import now_iso

E, C = tables.map_entries, tables.change_log

# (user resource, the user's IdP groups) -> {identity_key: value}; {} for an inactive user.
EntriesFn = Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, str]]


@dataclass(frozen=True)
class MapChange:
    seq: int
    identity_key: str
    value: str | None  # None = delete
    user_id: str | None
    deprovision: bool


def _slugs(value: str | None) -> set[str]:
    return {s for s in (value or "").split(",") if s}


def is_deprovision(old: str | None, new: str | None) -> bool:
    """Losing the entry, or losing any policy group, is a deprovisioning."""
    if old is None:
        return False
    return new is None or not _slugs(old) <= _slugs(new)


def _append_changes(conn: Connection, changes: list[dict[str, Any]]) -> list[MapChange]:
    out: list[MapChange] = []
    now = now_iso()
    for ch in changes:
        pk = conn.execute(C.insert().values(**ch, created=now)).inserted_primary_key
        assert pk is not None
        seq = pk[0]
        out.append(
            MapChange(int(seq), ch["identity_key"], ch["value"], ch["user_id"], ch["deprovision"])
        )
    return out


def refresh_users(
    conn: Connection, user_ids: Iterable[str], entries_fn: EntriesFn, base_url: str = ""
) -> list[MapChange]:
    """Recompute the desired entries of these users and log every key that changed."""
    changes: list[dict[str, Any]] = []
    for user_id in dict.fromkeys(user_ids):
        row = conn.execute(sa.select(tables.users).where(tables.users.c.id == user_id)).first()
        desired: dict[str, str] = {}
        if row is not None:
            user = resources.user_resource(resources._user(row), base_url)
            desired = entries_fn(user, resources.idp_groups_of_user(conn, user_id))
        current = {
            k: v
            for k, v in conn.execute(
                sa.select(E.c.identity_key, E.c.value).where(E.c.user_id == user_id)
            )
        }
        for key in current:
            if key not in desired:
                conn.execute(E.delete().where(E.c.identity_key == key))
                changes.append(
                    {"identity_key": key, "value": None, "user_id": user_id, "deprovision": True}
                )
        for key, value in desired.items():
            old = current.get(key)
            if old == value:
                continue
            if old is None:
                owner = conn.execute(sa.select(E.c.user_id).where(E.c.identity_key == key)).first()
                if owner is not None:
                    # Two users produce the same identity (e.g. one's e-mail is another's
                    # userName): the first owner keeps it; never grant one person's access
                    # to another.
                    continue
                conn.execute(E.insert().values(identity_key=key, value=value, user_id=user_id))
            else:
                conn.execute(E.update().where(E.c.identity_key == key).values(value=value))
            changes.append(
                {
                    "identity_key": key,
                    "value": value,
                    "user_id": user_id,
                    "deprovision": is_deprovision(old, value),
                }
            )
    return _append_changes(conn, changes)


def rebuild_all(conn: Connection, entries_fn: EntriesFn, batch: int = 2000) -> list[MapChange]:
    """Recompute every user's entries (after a policy change); log only the differences."""
    user_ids = [
        r[0] for r in conn.execute(sa.select(tables.users.c.id).order_by(tables.users.c.id))
    ]
    stale = [
        r[0]
        for r in conn.execute(
            sa.select(E.c.user_id)
            .distinct()
            .where(E.c.user_id.not_in(sa.select(tables.users.c.id)))
        )
    ]
    out: list[MapChange] = []
    for i in range(0, len(user_ids), batch):
        out.extend(refresh_users(conn, user_ids[i : i + batch], entries_fn))
    out.extend(refresh_users(conn, stale, entries_fn))
    return out


def desired_entries(conn: Connection) -> dict[str, str]:
    return {k: v for k, v in conn.execute(sa.select(E.c.identity_key, E.c.value))}


def head_seq(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(C.c.seq), 0))).scalar_one())


def changes_after(conn: Connection, seq: int, limit: int = 5000) -> Sequence[MapChange]:
    rows = conn.execute(sa.select(C).where(C.c.seq > seq).order_by(C.c.seq).limit(limit))
    return [MapChange(r.seq, r.identity_key, r.value, r.user_id, bool(r.deprovision)) for r in rows]
