"""SCIM bearer tokens: created once, stored only as a hash, rotatable with an overlap.

Secrets are 256-bit random strings, so a single SHA-256 is the right hash (a slow password
hash buys nothing against brute force of 2^256 and would cost CPU on every request). Lookup
is by hash (``store.tokens``); the final comparison is constant-time.

Does: issue, rotate, revoke and list tokens (each audited), judge a presented secret, keep
a short-lived cache of token rows.
Does not: SQL (``store.tokens``), or HTTP (the API takes the secret from the header).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Connection

from scimgate.audit import log as audit
from scimgate.store import tokens as stored
from scimgate.store.db import Database, now_iso
from scimgate.store.tokens import TokenRow, Verdict as Verdict, judge  # Verdict: part of this API

PREFIX = "sgt_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DURATION_RE = re.compile(r"^(\d+)([smhdw])$")
# last_used is written at most this often per token (not on every request).
LAST_USED_GRANULARITY = timedelta(seconds=60)


class TokenError(Exception):
    pass


def parse_duration(text: str, *, allow_zero: bool = False) -> timedelta:
    """`90d`, `12h`, `30m`, `45s`, `2w`. A lifetime of zero or less is refused: it would make
    something that is already expired (``allow_zero`` for an overlap, where 0 means "now")."""
    cleaned = text.strip()
    if cleaned.startswith("-"):
        raise TokenError(f"bad duration {text!r}: a lifetime must be positive (e.g. 90d, 12h)")
    m = _DURATION_RE.match(cleaned)
    if not m:
        raise TokenError(f"bad duration {text!r}: use e.g. 90d, 12h, 30m")
    n, unit = int(m.group(1)), m.group(2)
    if n == 0 and not allow_zero:
        raise TokenError(
            f"bad duration {text!r}: a lifetime of zero would be expired at once (e.g. 90d, 12h)"
        )
    return timedelta(
        **{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: n}
    )


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created: str
    expires: str | None
    last_used: str | None
    revoked: str | None
    rotating_until: str | None


def create(db: Database, name: str, expires_in: timedelta | None = None) -> str:
    """Create a token; returns the secret (shown once, never stored)."""
    if not NAME_RE.match(name):
        raise TokenError("token names are 1-64 of A-Z a-z 0-9 _ . - (starting alphanumeric)")
    secret = PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    expires = _iso(now + expires_in) if expires_in else None
    with db.write() as conn:
        # A revoked name can be issued again; its history stays in the audit trail.
        if not stored.issue(conn, name, hash_secret(secret), _iso(now), expires):
            raise TokenError(f"an active token named {name!r} exists (rotate or revoke it)")
        audit.append(conn, "token.created", detail={"name": name, "expires": expires})
    return secret


def rotate(
    db: Database,
    name: str,
    overlap: timedelta = timedelta(hours=24),
    expires_in: timedelta | None = None,
    actor: audit.Actor = audit.SYSTEM,
) -> str:
    """New secret for ``name``; the old one keeps working for ``overlap``, then stops."""
    secret = PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    expires = _iso(now + expires_in) if expires_in is not None else None
    with db.write() as conn:
        if not stored.rotate(conn, name, hash_secret(secret), _iso(now + overlap), expires):
            raise TokenError(f"no active token named {name!r}")
        audit.append(
            conn,
            "token.rotated",
            actor,
            detail={"name": name, "old_secret_valid_until": _iso(now + overlap)},
        )
    return secret


def revoke(db: Database, name: str, actor: audit.Actor = audit.SYSTEM) -> None:
    with db.write() as conn:
        if not stored.revoke(conn, name):
            raise TokenError(f"no active token named {name!r}")
        audit.append(conn, "token.revoked", actor, detail={"name": name})


def list_tokens(db: Database) -> list[TokenInfo]:
    with db.read() as conn:
        rows = stored.all_tokens(conn)
    now = now_iso()
    return [
        TokenInfo(
            r.name,
            r.created,
            r.expires,
            r.last_used,
            r.revoked,
            r.previous_expires if r.previous_expires and r.previous_expires > now else None,
        )
        for r in rows
    ]


def authenticate(conn: Connection, secret: str | None) -> Verdict:
    """Check a bearer secret against current and (during rotation) previous hashes."""
    if not secret:
        return Verdict(None, "missing")
    digest = hash_secret(secret)
    return judge(stored.find_by_hash(conn, digest), digest, now_iso())


class TokenCache:
    """Token rows by secret hash, each kept for ``ttl`` seconds (0.5 s by default).

    A cached valid row only saves work, it never grants access by itself: it lets the API
    read a request body before its thread hop and check the token inside the work's own
    first transaction instead of a transaction of its own. Revocation, expiry and the end
    of a rotation overlap therefore take effect on the very next request; at worst the body
    of a request whose token was revoked less than ``ttl`` ago is parsed before the 401.
    Unknown secrets are never cached.
    """

    def __init__(self, ttl: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._rows: dict[str, tuple[float, TokenRow]] = {}
        self._lock = threading.Lock()

    def lookup(self, secret: str | None) -> Verdict | None:
        """The verdict from a fresh cached row, or None when the database must be asked."""
        if not secret:
            return Verdict(None, "missing")
        digest = hash_secret(secret)
        hit = self._rows.get(digest)
        if hit is None or self.clock() - hit[0] >= self.ttl:
            return None
        return judge(hit[1], digest, now_iso())

    def recognises(self, secret: str | None) -> bool:
        """Whether ``secret`` matched a valid token row when it was last read, however long
        ago. Grants nothing (the request is authenticated as usual); it only keeps a
        client's own token from being throttled for other clients' failures."""
        if not secret:
            return False
        digest = hash_secret(secret)
        hit = self._rows.get(digest)
        return hit is not None and judge(hit[1], digest, now_iso()).reason == "ok"

    def authenticate(self, conn: Connection, secret: str | None) -> Verdict:
        """Read the row (cache miss) and remember it."""
        if not secret:
            return Verdict(None, "missing")
        digest = hash_secret(secret)
        row = stored.find_by_hash(conn, digest)
        self.remember(digest, row)
        return judge(row, digest, now_iso())

    def remember(self, digest: str, row: TokenRow | None) -> None:
        """Keep ``row``, just read for the secret hashing to ``digest`` (nothing for an
        unknown secret)."""
        if row is None:
            return
        with self._lock:
            if len(self._rows) > 1024:  # a handful of IdP tokens in practice
                self._rows.clear()
            self._rows[digest] = (self.clock(), row)

    def touched(self, name: str, last_used: str) -> None:
        """``touch`` wrote last_used: cached rows must not make it write again."""
        with self._lock:
            for _, row in self._rows.values():
                if row.name == name:
                    row.last_used = last_used


def touch_due(last_used: str | None) -> bool:
    """Whether ``touch`` would write (last_used older than LAST_USED_GRANULARITY)."""
    return not last_used or datetime.now(UTC) - _parse_iso(last_used) >= LAST_USED_GRANULARITY


def touch(db: Database, name: str, last_used: str | None, cache: TokenCache | None = None) -> None:
    """Record use, at most once per LAST_USED_GRANULARITY (not a write per request)."""
    if not touch_due(last_used):
        return
    now = _iso(datetime.now(UTC))
    with db.write() as conn:
        stored.set_last_used(conn, name, now)
    if cache is not None:
        cache.touched(name, now)


def expiries(db: Database) -> dict[str, float]:
    """name → expiry as a Unix timestamp (for metrics)."""
    with db.read() as conn:
        rows = stored.expiries(conn)
    return {n: _parse_iso(e).timestamp() for n, e in rows}
