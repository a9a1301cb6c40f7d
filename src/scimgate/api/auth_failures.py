"""The API's side of failed authentication: 429 for an address over its limit, each failure
recorded in the guard (``api.auth_guard``), the aggregates flushed into the audit trail.

Does: decide, before any token check, whether a request from an address over its limit is
answered 429 at once; turn a failed authentication into a record (and into a 429 once over
the limit); write each closed window's aggregates as audit events off the event loop (a task
on the loop, the write in the API's executor), and whatever is pending on shutdown.
Does not: authenticate or write the audit events itself (``app.authentication``), decide the
client address (``Api._actor``), or ever write to the database while a request waits: an
unauthenticated request never writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from scimgate.api.auth_guard import AuthGuard, FailureAggregate
from scimgate.app import tokens
from scimgate.app.authentication import Authenticator
from scimgate.metrics import Metrics
from scimgate.scim import errors

log = logging.getLogger("scimgate.api")


class AuthFailed(errors.Unauthorized):
    """A 401 with what the audit aggregate needs: why, and which known token (if any)."""

    def __init__(self, detail: str, *, kind: str, reason: str, token: str | None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.reason = reason
        self.token = token


@dataclass(frozen=True)
class Attempt:
    """What a failure record needs from a request."""

    source: str | None  # the client address, as Api._actor gives it
    secret: str  # the bearer secret ("" when none); only its hash is kept
    path: str
    user_agent: str | None
    request_id: str


def _too_many(wait: int) -> errors.TooManyRequests:
    return errors.TooManyRequests(
        f"too many failed authentications from this address; retry in {wait} s",
        retry_after=wait,
    )


class FailedAuthentication:
    def __init__(
        self,
        guard: AuthGuard,
        authenticator: Authenticator,
        metrics: Metrics,
        executor: Executor,
    ) -> None:
        self.guard = guard
        self.authenticator = authenticator
        self.metrics = metrics
        self.executor = executor
        self._flusher: asyncio.Task[None] | None = None  # event-loop thread only

    def refuse_if_throttled(self, source: str | None, attempt: Callable[[], Attempt]) -> None:
        """An address over its limit: a request with no bearer token, or with one that
        already failed in this window, is answered 429 at once (no token check, no thread
        hop). Any other token is checked as usual, so an IdP's valid token is never refused
        because others failed from its address; if it fails, :meth:`failed` answers 429."""
        wait = self.guard.retry_after(source)
        if wait is None:
            return
        seen = attempt()
        if self.authenticator.recognises(seen.secret):
            return
        if seen.secret and not self.guard.failed_before(tokens.hash_secret(seen.secret)):
            return
        self.guard.record(
            source, kind="auth.failed", reason="throttled", path=seen.path,
            user_agent=seen.user_agent, request_id=seen.request_id, throttled=True,
        )  # fmt: skip
        self._schedule_flush()
        self.metrics.auth_throttled.inc()
        raise _too_many(wait)

    def failed(self, attempt: Attempt, exc: AuthFailed) -> errors.ScimError:
        """Record a failed authentication; the error to answer (429 once over the limit)."""
        self.guard.record(
            attempt.source, kind=exc.kind, reason=exc.reason, token=exc.token,
            path=attempt.path, user_agent=attempt.user_agent, request_id=attempt.request_id,
            secret_hash=tokens.hash_secret(attempt.secret) if attempt.secret else None,
        )  # fmt: skip
        self._schedule_flush()
        wait = self.guard.retry_after(attempt.source)
        return exc if wait is None else _too_many(wait)

    def _schedule_flush(self) -> None:
        """Start the flusher (on the event loop) unless it is running."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        """Write each window's aggregates once it closed; end when nothing is pending."""
        loop = asyncio.get_running_loop()
        while (due := self.guard.next_flush()) is not None:
            await asyncio.sleep(max(due - time.time(), 0.0) + 0.05)
            aggregates = self.guard.take()
            if aggregates:
                await loop.run_in_executor(self.executor, self.write, aggregates)

    def write(self, aggregates: list[FailureAggregate]) -> None:
        """One audit event per aggregate, in one transaction; and one log line each."""
        try:
            self.authenticator.audit_failures(aggregates)
        except Exception:
            log.exception("could not audit failed authentications (they are logged below)")
        for agg in aggregates:
            log.warning(
                "authentication failures",
                extra={"kind": agg.kind, "client": agg.source, **agg.audit_detail()},
            )

    def close(self) -> None:
        """Shutdown (no request runs any more): audit what is pending, this window too."""
        if self.guard.dropped_windows:
            log.error(
                "failed-authentication windows dropped before a flush",
                extra={"windows": self.guard.dropped_windows},
            )
        aggregates = self.guard.take(everything=True)
        if aggregates:
            self.write(aggregates)
