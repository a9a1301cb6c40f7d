"""Console admins: credentials (create, rotate, revoke, list), sign-in, sessions.

An admin credential is a 256-bit random secret like a SCIM token, so one SHA-256 is the
right hash (a slow password hash buys nothing at that entropy); it is compared in constant
time. A session is another random secret held in the browser's cookie, stored hashed too:
a stolen database holds nothing that signs anyone in. Sessions end at ``lifetime`` after
sign-in or ``idle`` after the last request, whichever comes first, and are revocable on the
server (sign-out, the admin rotated or revoked). The CSRF token of a session is an HMAC of
the session secret, so it needs no storage and cannot be derived from the stored hash.

Failed sign-ins are throttled per source address and per account name in fixed windows,
with bounded memory (:class:`SignInThrottle`) and a bounded number of audit events per
window (:data:`MAX_AUDITED_FAILURES`).

Does: issue, rotate, revoke and list admins (each audited); sign in and out (audited, with
the admin's name as actor); judge a session secret; the CSRF token of a session.
Does not: HTTP, cookies or forms (``scimgate.console``), SQL (``store.admins``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scimgate.audit import log as audit
from scimgate.store import admins as stored
from scimgate.store.db import Database, now_iso

PREFIX = "sga_"
ROLES = ("viewer", "operator")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
SESSIONS_PER_ADMIN = 20
# Audit events for failed sign-ins per throttle window, all sources together: enough to
# see an attack, bounded whatever the attacker sends (the rest are counted in the next one).
MAX_AUDITED_FAILURES = 50
# last_seen is written at most this often per session (not on every poll of a live page).
LAST_SEEN_GRANULARITY = timedelta(seconds=30)


class AdminError(Exception):
    pass


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def admin_actor(name: str, client: str | None = None, user_agent: str | None = None) -> audit.Actor:
    """The audit actor of a console action: ``admin:NAME`` (SCIM token names have no colon,
    so the two never mix)."""
    return audit.Actor(token=f"admin:{name}", client=client, user_agent=user_agent)


@dataclass(frozen=True)
class AdminInfo:
    name: str
    role: str
    created: str
    rotated: str | None
    revoked: str | None
    last_sign_in: str | None


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise AdminError("admin names are 1-64 of A-Z a-z 0-9 _ . @ - (starting alphanumeric)")


def create(db: Database, name: str, role: str, actor: audit.Actor = audit.SYSTEM) -> str:
    """A new admin; returns the secret (shown once, never stored)."""
    _check_name(name)
    if role not in ROLES:
        raise AdminError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    secret = PREFIX + secrets.token_urlsafe(32)
    with db.write() as conn:
        if not stored.issue_admin(conn, name, role, hash_secret(secret), now_iso()):
            raise AdminError(f"an active admin named {name!r} exists (rotate or revoke it)")
        audit.append(conn, "admin.created", actor, detail={"name": name, "role": role})
    return secret


def rotate(db: Database, name: str, actor: audit.Actor = audit.SYSTEM) -> str:
    """A new secret for ``name``; the old one stops at once and every session ends."""
    secret = PREFIX + secrets.token_urlsafe(32)
    now = now_iso()
    with db.write() as conn:
        admin_id = stored.rotate_admin(conn, name, hash_secret(secret), now)
        if admin_id is None:
            raise AdminError(f"no active admin named {name!r}")
        ended = stored.revoke_sessions_of(conn, admin_id, now)
        audit.append(conn, "admin.rotated", actor, detail={"name": name, "sessions_ended": ended})
    return secret


def revoke(db: Database, name: str, actor: audit.Actor = audit.SYSTEM) -> None:
    now = now_iso()
    with db.write() as conn:
        admin_id = stored.revoke_admin(conn, name, now)
        if admin_id is None:
            raise AdminError(f"no active admin named {name!r}")
        ended = stored.revoke_sessions_of(conn, admin_id, now)
        audit.append(conn, "admin.revoked", actor, detail={"name": name, "sessions_ended": ended})


def credential_ok(db: Database, name: str, secret: str) -> bool:
    """Whether ``secret`` is the active admin ``name``'s credential (nothing is recorded)."""
    with db.read() as conn:
        row = stored.find_admin(conn, name)
    return (
        row is not None
        and row.revoked is None
        and hmac.compare_digest(row.secret_hash, hash_secret(secret))
    )


def list_admins(db: Database) -> list[AdminInfo]:
    with db.read() as conn:
        rows = stored.all_admins(conn)
    return [
        AdminInfo(r.name, r.role, r.created, r.rotated, r.revoked, r.last_sign_in) for r in rows
    ]


# --- sign-in and sessions -----------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """A signed-in admin, as a request sees it."""

    admin: str
    role: str
    secret_hash: str
    expires: str

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class SignIn:
    """A successful sign-in: the cookie secret (the browser keeps it) and the session."""

    secret: str
    session: Session


def csrf_token(session_secret: str) -> str:
    """The session's CSRF token: an HMAC of its secret (not of the stored hash)."""
    return hmac.new(session_secret.encode(), b"scimgate console csrf", hashlib.sha256).hexdigest()


def csrf_ok(session_secret: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(session_secret), presented or "")


class SignInThrottle:
    """Failed sign-ins per source and per account name in fixed windows of ``window``
    seconds; a key over ``limit`` failures is refused until its window ends. At most
    ``max_keys`` keys are tracked; past that, new keys share one counter (so memory is
    bounded and a flood of sources throttles itself together)."""

    OVERFLOW = "\0overflow"

    def __init__(
        self,
        window: float = 300.0,
        limit: int = 10,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window, self.limit, self.max_keys, self.clock = window, limit, max_keys, clock
        self._start = 0.0
        self._failures: dict[str, int] = {}
        self._audited = 0
        self._unaudited = 0
        # Guards the counters above (request threads call in; no I/O under it).
        self._lock = threading.Lock()

    def _roll(self) -> None:
        start = self.clock() // self.window * self.window
        if start != self._start:
            self._start, self._failures, self._audited = start, {}, 0

    def _key(self, key: str) -> str:
        if key in self._failures or len(self._failures) < self.max_keys:
            return key
        return self.OVERFLOW

    def blocked(self, source: str, name: str) -> float:
        """Seconds until this source or name may try again (0: now)."""
        with self._lock:
            self._roll()
            over = any(
                self._failures.get(self._key(k), 0) >= self.limit
                for k in (f"src:{source}", f"name:{name.lower()}")
            )
            return self._start + self.window - self.clock() if over else 0.0

    def failed(self, source: str, name: str) -> tuple[bool, int]:
        """Count a failure; (audit this one?, failures not audited since the last audited)."""
        with self._lock:
            self._roll()
            for k in (f"src:{source}", f"name:{name.lower()}"):
                key = self._key(k)
                self._failures[key] = self._failures.get(key, 0) + 1
            if self._audited >= MAX_AUDITED_FAILURES:
                self._unaudited += 1
                return False, 0
            self._audited += 1
            skipped, self._unaudited = self._unaudited, 0
            return True, skipped


def sign_in(
    db: Database,
    name: str,
    secret: str,
    actor: audit.Actor,
    *,
    lifetime: float,
) -> SignIn | None:
    """A new session when ``name`` is an active admin and ``secret`` its credential; None
    otherwise (the caller counts the failure: :meth:`SignInThrottle.failed`)."""
    digest = hash_secret(secret)
    now = datetime.now(UTC)
    with db.read() as conn:
        row = stored.find_admin(conn, name)
    if row is None or row.revoked is not None or not hmac.compare_digest(row.secret_hash, digest):
        return None
    session_secret = secrets.token_urlsafe(32)
    session_hash = hash_secret(session_secret)
    expires = _iso(now + timedelta(seconds=lifetime))
    with db.write() as conn:
        stored.open_session(conn, session_hash, row.id, _iso(now), expires, SESSIONS_PER_ADMIN)
        stored.set_last_sign_in(conn, row.id, _iso(now))
        audit.append(
            conn,
            "console.signed_in",
            admin_actor(row.name, actor.client, actor.user_agent),
            detail={"name": row.name, "role": row.role, "session_expires": expires},
        )
    return SignIn(session_secret, Session(row.name, row.role, session_hash, expires))


def record_failed_sign_in(db: Database, name: str, actor: audit.Actor, skipped: int) -> None:
    """One audit event for a failed sign-in (the name tried, bounded; never the secret)."""
    with db.write() as conn:
        audit.append(
            conn,
            "console.sign_in_failed",
            actor,
            detail={"name": name[:64], "earlier_failures_not_audited": skipped},
        )


def session_for(db: Database, session_secret: str | None, *, idle: float) -> Session | None:
    """The live session for a cookie secret: not revoked, admin not revoked, before its
    expiry and within ``idle`` seconds of its last request (last_seen then moves on, at
    most every :data:`LAST_SEEN_GRANULARITY`)."""
    if not session_secret:
        return None
    digest = hash_secret(session_secret)
    now = datetime.now(UTC)
    with db.read() as conn:
        row = stored.find_session(conn, digest)
    if row is None or row.revoked or row.admin_revoked:
        return None
    if _parse(row.expires) <= now or now - _parse(row.last_seen) > timedelta(seconds=idle):
        return None
    if now - _parse(row.last_seen) >= LAST_SEEN_GRANULARITY:
        with db.write() as conn:
            stored.touch_session(conn, digest, _iso(now))
    return Session(row.admin_name, row.role, digest, row.expires)


def sign_out(db: Database, session: Session, actor: audit.Actor) -> None:
    with db.write() as conn:
        stored.revoke_session(conn, session.secret_hash, now_iso())
        audit.append(conn, "console.signed_out", actor, detail={"name": session.admin})
