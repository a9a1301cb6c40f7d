"""SQL for SCIM bearer tokens: rows of ``api_tokens``, looked up by the hash of a secret.

Does: insert (or re-issue a revoked name), rotate, revoke, list, look up by hash, record
last use, read expiries.
Does not: hash secrets, judge a presented secret, or audit (``app.tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.store import tables
from scimgate.store.db import Sql, now_iso

T = tables.tokens


@dataclass
class TokenRow:
    """What authentication needs from a token row (``last_used`` is updated in place by a
    cache that holds the row, ``app.tokens.TokenCache``)."""

    name: str
    secret_hash: str
    expires: str | None
    last_used: str | None
    revoked: str | None
    previous_hash: str | None
    previous_expires: str | None


_TOKEN_BY_HASH = Sql(
    "SELECT name, secret_hash, expires, last_used, revoked, previous_hash, previous_expires "
    "FROM api_tokens WHERE secret_hash = ? OR previous_hash = ?"
)


def find_by_hash(conn: Connection, digest: str) -> TokenRow | None:
    """The token whose current or (during rotation) previous secret hashes to ``digest``:
    the hot path of every request (one indexed statement on the DBAPI connection)."""
    r = _TOKEN_BY_HASH.run(conn, (digest, digest)).fetchone()
    return TokenRow(*r) if r is not None else None


def issue(conn: Connection, name: str, secret_hash: str, created: str, expires: str | None) -> bool:
    """A new token row for ``name`` (a revoked name is issued again in its row). False when
    an active token already has that name."""
    existing = conn.execute(sa.select(T.c.id, T.c.revoked).where(T.c.name == name)).first()
    if existing is not None and existing.revoked is None:
        return False
    values = {
        "name": name,
        "secret_hash": secret_hash,
        "created": created,
        "expires": expires,
        "last_used": None,
        "revoked": None,
        "previous_hash": None,
        "previous_expires": None,
    }
    if existing is not None:
        conn.execute(T.update().where(T.c.id == existing.id).values(**values))
    else:
        conn.execute(T.insert().values(**values))
    return True


def rotate(
    conn: Connection, name: str, secret_hash: str, previous_until: str, expires: str | None
) -> bool:
    """The active token ``name`` gets a new secret hash; its current one stays valid until
    ``previous_until``. False when there is no active token of that name."""
    row = conn.execute(sa.select(T).where(T.c.name == name, T.c.revoked.is_(None))).first()
    if row is None:
        return False
    values: dict[str, Any] = {
        "secret_hash": secret_hash,
        "previous_hash": row.secret_hash,
        "previous_expires": previous_until,
    }
    if expires is not None:
        values["expires"] = expires
    conn.execute(T.update().where(T.c.id == row.id).values(**values))
    return True


def revoke(conn: Connection, name: str) -> bool:
    """Revoke the active token ``name`` (both secrets). False when there is none."""
    res = conn.execute(
        T.update()
        .where(T.c.name == name, T.c.revoked.is_(None))
        .values(revoked=now_iso(), previous_hash=None, previous_expires=None)
    )
    return bool(res.rowcount)


def all_tokens(conn: Connection) -> list[Any]:
    """Every token row, by name."""
    return list(conn.execute(sa.select(T).order_by(T.c.name)).all())


def set_last_used(conn: Connection, name: str, when: str) -> None:
    conn.execute(T.update().where(T.c.name == name).values(last_used=when))


def expiries(conn: Connection) -> list[tuple[str, str]]:
    """(name, expires) of every active token that expires."""
    q = sa.select(T.c.name, T.c.expires).where(T.c.revoked.is_(None), T.c.expires.is_not(None))
    return [(n, e) for n, e in conn.execute(q)]
