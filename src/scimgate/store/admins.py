"""Console admins as stored: rows of ``admin_accounts`` and ``admin_sessions``.

Does: insert (or re-issue a revoked name), rotate, revoke and list admin accounts; open,
look up, touch and revoke sessions (by the hash of the cookie secret), prune expired ones
and bound the live sessions per admin.
Does not: make or hash secrets, decide lifetimes or roles, or audit (``app.admins``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.store import tables

A, S = tables.admin_accounts, tables.admin_sessions


@dataclass(frozen=True)
class AdminRow:
    id: int
    name: str
    role: str
    secret_hash: str
    created: str
    rotated: str | None
    revoked: str | None
    last_sign_in: str | None


@dataclass(frozen=True)
class SessionRow:
    """A session with its admin, as one request sees it."""

    admin_id: int
    admin_name: str
    role: str
    created: str
    expires: str
    last_seen: str
    revoked: str | None
    admin_revoked: str | None


def _admin(r: Any) -> AdminRow:
    return AdminRow(
        int(r.id), r.name, r.role, r.secret_hash, r.created, r.rotated, r.revoked, r.last_sign_in
    )


def find_admin(conn: Connection, name: str) -> AdminRow | None:
    r = conn.execute(sa.select(A).where(A.c.name == name)).first()
    return _admin(r) if r is not None else None


def issue_admin(conn: Connection, name: str, role: str, secret_hash: str, now: str) -> bool:
    """A new account (a revoked name is issued again in its row). False when an active
    account has that name."""
    existing = find_admin(conn, name)
    if existing is not None and existing.revoked is None:
        return False
    values = {
        "name": name,
        "role": role,
        "secret_hash": secret_hash,
        "created": now,
        "rotated": None,
        "revoked": None,
        "last_sign_in": None,
    }
    if existing is not None:
        conn.execute(A.update().where(A.c.id == existing.id).values(**values))
    else:
        conn.execute(A.insert().values(**values))
    return True


def rotate_admin(conn: Connection, name: str, secret_hash: str, now: str) -> int | None:
    """New secret hash for the active account ``name``; its id, or None when there is none."""
    row = find_admin(conn, name)
    if row is None or row.revoked is not None:
        return None
    conn.execute(A.update().where(A.c.id == row.id).values(secret_hash=secret_hash, rotated=now))
    return row.id


def revoke_admin(conn: Connection, name: str, now: str) -> int | None:
    row = find_admin(conn, name)
    if row is None or row.revoked is not None:
        return None
    conn.execute(A.update().where(A.c.id == row.id).values(revoked=now))
    return row.id


def all_admins(conn: Connection) -> list[AdminRow]:
    return [_admin(r) for r in conn.execute(sa.select(A).order_by(A.c.name))]


def set_last_sign_in(conn: Connection, admin_id: int, now: str) -> None:
    conn.execute(A.update().where(A.c.id == admin_id).values(last_sign_in=now))


# --- sessions ---------------------------------------------------------------------------


def open_session(
    conn: Connection, secret_hash: str, admin_id: int, now: str, expires: str, keep: int
) -> None:
    """A new session; expired rows go, and the admin keeps at most ``keep`` live sessions
    (the oldest are revoked): the table stays bounded whatever clients do."""
    conn.execute(S.delete().where(S.c.expires < now))
    conn.execute(
        S.insert().values(
            secret_hash=secret_hash,
            admin_id=admin_id,
            created=now,
            expires=expires,
            last_seen=now,
            revoked=None,
        )
    )
    live = [
        r.secret_hash
        for r in conn.execute(
            sa.select(S.c.secret_hash)
            .where(S.c.admin_id == admin_id, S.c.revoked.is_(None))
            .order_by(S.c.created.desc())
        )
    ]
    if len(live) > keep:
        conn.execute(S.update().where(S.c.secret_hash.in_(live[keep:])).values(revoked=now))


def find_session(conn: Connection, secret_hash: str) -> SessionRow | None:
    q = (
        sa.select(
            S.c.admin_id,
            A.c.name,
            A.c.role,
            S.c.created,
            S.c.expires,
            S.c.last_seen,
            S.c.revoked,
            A.c.revoked.label("admin_revoked"),
        )
        .select_from(S.join(A, A.c.id == S.c.admin_id))
        .where(S.c.secret_hash == secret_hash)
    )
    r = conn.execute(q).first()
    return SessionRow(int(r[0]), *r[1:]) if r is not None else None


def touch_session(conn: Connection, secret_hash: str, now: str) -> None:
    conn.execute(S.update().where(S.c.secret_hash == secret_hash).values(last_seen=now))


def revoke_session(conn: Connection, secret_hash: str, now: str) -> None:
    conn.execute(
        S.update().where(S.c.secret_hash == secret_hash, S.c.revoked.is_(None)).values(revoked=now)
    )


def revoke_sessions_of(conn: Connection, admin_id: int, now: str) -> int:
    res = conn.execute(
        S.update().where(S.c.admin_id == admin_id, S.c.revoked.is_(None)).values(revoked=now)
    )
    return int(res.rowcount or 0)
