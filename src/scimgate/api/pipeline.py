"""The request pipeline every SCIM route goes through: authenticate (before the body is
read), read the body, run the route's work in the thread pool, wait for HAProxy when the
write asks for it (read-your-writes), and answer every failure with an RFC 7644 §3.12 error
body; every request counted and logged.

Does: HTTP around a use case: the bearer secret from the header, 401 and 429, the thread
hop, the actor of the audit trail, metrics and the request log line.
Does not: judge tokens or touch the database (``app.authentication``), or decide what a
route does (``api.routes``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scimgate.api import http
from scimgate.api.auth_failures import Attempt, AuthFailed, FailedAuthentication
from scimgate.api.auth_guard import AuthGuard
from scimgate.app.authentication import Authenticator
from scimgate.app.propagation import Propagation, Readiness
from scimgate.app.service import ScimService, WriteResult
from scimgate.audit import log as audit
from scimgate.config import Settings
from scimgate.metrics import Metrics
from scimgate.scim import errors, text

log = logging.getLogger("scimgate.api")

# Request paths in log lines: bounded, control characters escaped.
_LOGGED_PATH_CHARS = 256


@dataclass
class WriteResultResponse:
    """A response that may wait for HAProxy confirmation (read-your-writes) before leaving."""

    response: Response
    result: WriteResult


# A route's work: (the authenticated actor, the parsed body or None) -> its response.
Work = Callable[[audit.Actor, Any], Response | WriteResultResponse]


def _bearer(request: Request) -> str:
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


@dataclass
class Api:
    settings: Settings
    service: ScimService
    authenticator: Authenticator
    metrics: Metrics
    readiness: Readiness
    propagation: Propagation | None = None
    # The request work's threads (a plain executor: ~30 % less CPU per hop than anyio's).
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(40, thread_name_prefix="scimgate-api")
    )
    auth_guard: AuthGuard | None = None
    failed_auth: FailedAuthentication = field(init=False, repr=False)

    def __post_init__(self) -> None:
        guard = self.auth_guard or AuthGuard(
            self.settings.auth_failure_window_seconds, self.settings.auth_failure_limit
        )
        self.failed_auth = FailedAuthentication(
            guard, self.authenticator, self.metrics, self.executor
        )

    # --- the request pipeline: auth + work in one thread hop, errors as SCIM bodies ------

    def _actor(self, request: Request, token_name: str | None) -> audit.Actor:
        client = request.client.host if request.client else None
        return audit.Actor(
            token=token_name,
            client=client,
            user_agent=request.headers.get("user-agent"),
            request_id=request.state.request_id,
        )

    def _authenticate(self, request: Request) -> audit.Actor:
        verdict = self.authenticator.verdict(_bearer(request))
        actor = self._actor(request, verdict.name)
        if verdict.reason != "ok":
            # No write here: an unauthenticated request never writes to the database. The
            # failure is aggregated per source and window and audited by a flush (call()).
            self.metrics.auth_failures.labels(verdict.reason).inc()
            raise AuthFailed(
                "missing bearer token"
                if verdict.reason == "missing"
                else f"bearer token is {verdict.reason if verdict.reason != 'unknown' else 'not valid'}",
                kind="token.expired_use" if verdict.reason == "expired" else "auth.failed",
                reason=verdict.reason,
                token=verdict.name,
            )
        return actor

    def _work_if_token_holds(
        self, request: Request, work: Work, body: Any
    ) -> Response | WriteResultResponse | None:
        """The work, when the cached token row is valid and the database agrees, checked in
        the work's first transaction. None: take the full path (``_authenticate``)."""
        return self.authenticator.run_if_cached(
            _bearer(request), lambda name: work(self._actor(request, name), body)
        )

    async def call(
        self,
        request: Request,
        endpoint: str,
        work: Work,
        *,
        body_limit: int | None = None,
        inline: bool = False,
        check_text: bool = True,
    ) -> Response:
        """Authenticate, then read the body (an unauthenticated client never gets its body
        parsed), then run the work in the thread pool; every outcome is counted and logged."""
        started = time.perf_counter()
        request.state.request_id = http.request_id(request)
        status = 500
        try:
            self.failed_auth.refuse_if_throttled(
                self._actor(request, None).client, lambda: self._attempt(request)
            )
            out: Response | WriteResultResponse | None = None
            if inline and self.authenticator.inline_reads:
                # A short read (one indexed lookup) on the loop itself: a thread hop costs
                # more CPU (~0.1 ms) than the read. Only with a cached token row.
                with self.authenticator.inline():
                    out = self._work_if_token_holds(request, work, None)
            if out is None:
                out = await self._in_thread(request, work, body_limit, check_text)
            if isinstance(out, WriteResultResponse):
                await self._read_your_writes(out.result, request.state.request_id)
                out = out.response
            response = out
        except errors.ScimError as exc:
            if isinstance(exc, AuthFailed):
                exc = self.failed_auth.failed(self._attempt(request), exc)
            response = http.error_response(exc)
        except Exception:  # never a stack trace to the client
            log.exception("internal error", extra={"request_id": request.state.request_id})
            response = http.error_response(errors.ScimError("internal error", status=500))
        status = response.status_code
        response.headers["X-Request-ID"] = request.state.request_id
        elapsed = time.perf_counter() - started
        self.metrics.observe_request(endpoint, request.method, status, elapsed)
        log.info(
            "scim request",
            extra={
                "request_id": request.state.request_id,
                "method": request.method,
                "path": text.echo(request.url.path, _LOGGED_PATH_CHARS),
                "status": status,
                "ms": round(elapsed * 1000, 2),
            },
        )
        return response

    def _attempt(self, request: Request) -> Attempt:
        return Attempt(
            self._actor(request, None).client, _bearer(request), request.url.path,
            request.headers.get("user-agent"), request.state.request_id,
        )  # fmt: skip

    def close(self) -> None:
        """Shutdown (the server has stopped): finish the request threads, then audit the
        failed authentications still pending, the current window included."""
        self.executor.shutdown(wait=True)
        self.failed_auth.close()

    async def _in_thread(
        self, request: Request, work: Work, body_limit: int | None, check_text: bool = True
    ) -> Response | WriteResultResponse:
        loop = asyncio.get_running_loop()
        body = None
        if body_limit is not None and self.authenticator.recently_valid(_bearer(request)):
            # The token row was valid moments ago (TokenCache): read the body without a
            # thread hop of its own; the token is checked again, against the database, in
            # the same hop as the work below.
            body = await http.read_json(request, body_limit, check_text=check_text)
        elif body_limit is not None:
            await loop.run_in_executor(self.executor, self._authenticate, request)
            body = await http.read_json(request, body_limit, check_text=check_text)

        def run() -> Response | WriteResultResponse:
            # Authenticate and work in one thread hop. A revoked or expired token stops here,
            # whatever the cache says: the work's own (first) transaction checks the token
            # row before anything else; the full path reads it on its own.
            out = self._work_if_token_holds(request, work, body)
            return work(self._authenticate(request), body) if out is None else out

        return await loop.run_in_executor(self.executor, run)

    async def _read_your_writes(self, result: WriteResult, request_id: str) -> None:
        if not (self.settings.read_your_writes and self.propagation and result.changes):
            return
        try:
            ok = await self.propagation.wait_confirmed(
                result.last_seq, self.settings.read_your_writes_timeout
            )
        except Exception:
            # The write is committed: its answer must not become a 500 (a client would
            # retry a write that took effect). The change log still carries it to HAProxy.
            log.exception("read-your-writes wait failed", extra={"request_id": request_id})
            ok = False
        if not ok:
            self.metrics.ryw_timeouts.inc()
            log.warning(
                "read-your-writes timeout: change not yet confirmed by every target",
                extra={
                    "request_id": request_id,
                    "seq": result.last_seq,
                    "timeout_s": self.settings.read_your_writes_timeout,
                },
            )
