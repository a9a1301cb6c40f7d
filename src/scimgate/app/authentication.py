"""Bearer authentication of SCIM requests, as a use case: is this secret a valid token now,
and the audit of failed authentications.

Does: judge a secret against the store (``store.tokens``) through a short-lived cache of
token rows (``tokens.TokenCache``); run a request's work with the token checked in the
work's own first transaction (no transaction of its own); record last use (at most once a
minute); write failed-authentication aggregates as audit events.
Does not: read HTTP headers or answer 401/429 (``scimgate.api``), or decide when an address
is throttled (``api.auth_guard``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection

from scimgate.app import tokens
from scimgate.audit import log as audit
from scimgate.store.db import Database

T = TypeVar("T")


class AuditedFailure(Protocol):
    """One aggregate of failed authentications (``api.auth_guard.FailureAggregate``)."""

    kind: str
    source: str | None
    user_agent: str | None
    request_id: str | None

    @property
    def actor(self) -> str | None: ...

    def audit_detail(self) -> dict[str, Any]: ...


class Authenticator:
    """The token check every SCIM request goes through, on one database."""

    def __init__(self, db: Database, cache: tokens.TokenCache | None = None) -> None:
        self.db = db
        self.cache = cache if cache is not None else tokens.TokenCache()

    @property
    def inline_reads(self) -> bool:
        """Whether short reads may run on the event loop's thread (SQLite files)."""
        return self.db.inline_reads

    @contextlib.contextmanager
    def inline(self) -> Iterator[None]:
        """Reads inside the block run on this (the event loop's) thread's own connections."""
        with self.db.inline():
            yield

    def verdict(self, secret: str) -> tokens.Verdict:
        """The full check: the token row read in a transaction of its own (and cached); a
        valid token's last use is recorded (at most once per LAST_USED_GRANULARITY)."""
        with self.db.read() as conn:
            verdict = self.cache.authenticate(conn, secret)
        if verdict.reason == "ok":
            assert verdict.name is not None
            tokens.touch(self.db, verdict.name, verdict.last_used, self.cache)
        return verdict

    def run_if_cached(self, secret: str, work: Callable[[str], T]) -> T | None:
        """``work(token name)`` when the cached token row is valid and the database agrees,
        checked in the work's first transaction (no transaction of its own). None: take the
        full path (:meth:`verdict`: a cache miss, a last-use write due, or the token
        changed, which it decides and the caller audits)."""
        verdict = self.cache.lookup(secret)
        if verdict is None or verdict.reason != "ok" or tokens.touch_due(verdict.last_used):
            return None
        assert verdict.name is not None

        def check(conn: Connection) -> None:
            if self.cache.authenticate(conn, secret).reason != "ok":
                raise tokens.TokenChanged

        try:
            with self.db.checked(check) as checked:
                try:
                    return work(verdict.name)
                finally:
                    if not checked.ran():
                        # No transaction (discovery documents, or a request refused before
                        # one): check in one of its own, before any answer leaves.
                        with self.db.read():
                            pass
        except tokens.TokenChanged:
            return None

    def recently_valid(self, secret: str) -> bool:
        """The token's cached row (at most TokenCache.ttl old) says it is valid."""
        verdict = self.cache.lookup(secret)
        return verdict is not None and verdict.reason == "ok"

    def recognises(self, secret: str) -> bool:
        """The secret matched a valid token row when it was last read (grants nothing)."""
        return self.cache.recognises(secret)

    def audit_failures(self, failures: Iterable[AuditedFailure]) -> None:
        """One audit event per aggregate, in one transaction."""
        with self.db.write() as conn:
            for failure in failures:
                actor = audit.Actor(
                    failure.actor, failure.source, failure.user_agent, failure.request_id
                )
                audit.append(conn, failure.kind, actor, detail=failure.audit_detail())
