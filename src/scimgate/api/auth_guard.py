"""Failed authentication: counted per source, slowed down, and audited in bounded form.

Does: keep, per fixed window (``auth_failure_window_seconds``, 60 s by default, aligned to
the clock) and per source address, how many requests failed authentication and why, and
which bearer secrets (by hash) failed; tell when a source is over ``auth_failure_limit`` in
the current window (the API answers 429 with Retry-After); hand the aggregates of closed
windows to a flush, which writes one audit event per (kind, source) and window.
Does not: authenticate (``scimgate.app.tokens``), decide the source address (``Api._actor``), or
write anything itself (``Api`` flushes off the event loop, and on shutdown).

Bounds (docs/operations.md, "Failed authentication"): at most :data:`MAX_AUDITED_SOURCES`
aggregates per window, the rest folded into one overflow aggregate per kind, so at most
``MAX_AUDITED_SOURCES + 2`` events per window; every field an aggregate stores is truncated
(:data:`MAX_SAMPLE_CHARS`, :data:`MAX_TOKEN_NAMES`); at most :data:`MAX_TRACKED_SOURCES`
per-source counters in memory, the others share one; at most :data:`MAX_PENDING_WINDOWS`
closed windows wait for a flush (older ones are dropped, counted in the log).
"""

from __future__ import annotations

import math
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

KINDS = ("auth.failed", "token.expired_use")
MAX_AUDITED_SOURCES = 16
MAX_TRACKED_SOURCES = 4096
MAX_PENDING_WINDOWS = 16
MAX_SAMPLE_CHARS = 128
MAX_TOKEN_NAMES = 4
MAX_REASONS = 8
# Characters kept as they are in a sampled path; everything else is %-escaped, so the sample
# is ASCII with nothing JSON must escape (its stored size is its length).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sample_path(path: str) -> str:
    """A request path as stored in an aggregate: %-escaped ASCII, at most MAX_SAMPLE_CHARS."""
    quoted = urllib.parse.quote(path.encode("utf-8", "surrogatepass"), safe=_PATH_SAFE)
    return quoted if len(quoted) <= MAX_SAMPLE_CHARS else quoted[: MAX_SAMPLE_CHARS - 3] + "..."


@dataclass
class FailureAggregate:
    """One source's failed authentications of one kind in one window: one audit event."""

    kind: str
    source: str | None  # the client address (None: unknown, or the overflow aggregate)
    window_start: float
    window_seconds: float
    first: float
    last: float
    count: int = 0
    throttled: int = 0  # requests answered 429 without a token check
    reasons: dict[str, int] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)  # names of known tokens (revoked, expired)
    named: int = 0  # failures that named a known token
    path: str | None = None  # the first request's, sampled
    user_agent: str | None = None
    request_id: str | None = None
    overflow: bool = False  # sources past MAX_AUDITED_SOURCES, folded into one aggregate
    sources: int = 0  # overflow only: sources folded in (first seen in the window)

    @property
    def actor(self) -> str | None:
        """The token name when every failure named the same known token."""
        return self.tokens[0] if len(self.tokens) == 1 and self.named == self.count else None

    def audit_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "window_start": _iso(self.window_start),
            "window_seconds": self.window_seconds,
            "count": self.count,
            "reasons": dict(self.reasons),
            "first": _iso(self.first),
            "last": _iso(self.last),
            "path": self.path,
        }
        if self.throttled:
            detail["throttled"] = self.throttled
        if self.tokens:
            detail["tokens"] = list(self.tokens)
        if self.overflow:
            detail["overflow"] = True
            detail["sources"] = self.sources
        return detail


@dataclass
class _Window:
    start: float
    failures: dict[str, int] = field(default_factory=dict)  # source -> failures
    untracked: int = 0  # failures of sources past MAX_TRACKED_SOURCES (they share it)
    failed_secrets: set[str] = field(default_factory=set)  # hashes, MAX_TRACKED_SOURCES at most
    aggregates: dict[tuple[str, str], FailureAggregate] = field(default_factory=dict)


_OVERFLOW = "\x00overflow"  # an aggregate key no address can take


class AuthGuard:
    """Per-source failure counts and audit aggregates, one window at a time."""

    def __init__(
        self,
        window_seconds: float = 60.0,
        limit: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_seconds <= 0 or limit < 1:
            raise ValueError("window_seconds must be > 0 and limit >= 1")
        self.window_seconds = window_seconds
        self.limit = limit
        self.clock = clock
        self.dropped_windows = 0
        # Guards _window and _closed (the event loop records; a flush thread takes).
        self._lock = threading.Lock()
        self._window = _Window(self._window_start(clock()))
        self._closed: list[_Window] = []

    def _window_start(self, now: float) -> float:
        return math.floor(now / self.window_seconds) * self.window_seconds

    def _roll(self, now: float) -> _Window:
        """The current window, closing the previous one if its time is over (lock held)."""
        if now >= self._window.start + self.window_seconds:
            if self._window.aggregates:
                self._closed.append(self._window)
                if len(self._closed) > MAX_PENDING_WINDOWS:
                    self._closed.pop(0)
                    self.dropped_windows += 1
            self._window = _Window(self._window_start(now))
        return self._window

    def retry_after(self, source: str | None) -> int | None:
        """Seconds until ``source`` may try again, when it is over the limit; else None."""
        now = self.clock()
        with self._lock:
            window = self._roll(now)
            key = source or ""
            failures = window.failures.get(key)
            if failures is None:
                tracked = len(window.failures) < MAX_TRACKED_SOURCES
                failures = 0 if tracked else window.untracked
            if failures < self.limit:
                return None
            return max(1, math.ceil(window.start + self.window_seconds - now))

    def failed_before(self, secret_hash: str) -> bool:
        """Whether this secret already failed in the current window (it cannot have become
        valid since: secrets are issued by scimgate, never chosen by a client)."""
        with self._lock:
            return secret_hash in self._roll(self.clock()).failed_secrets

    def record(
        self,
        source: str | None,
        *,
        kind: str,
        reason: str,
        token: str | None = None,
        path: str = "",
        user_agent: str | None = None,
        request_id: str | None = None,
        throttled: bool = False,
        secret_hash: str | None = None,
    ) -> None:
        """One failed (or, ``throttled``, refused) authentication from ``source``;
        ``secret_hash``: the hash of the bearer secret that failed, if there was one."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        now = self.clock()
        with self._lock:
            window = self._roll(now)
            key = source or ""
            new_source = key not in window.failures
            if not throttled:
                if not new_source or len(window.failures) < MAX_TRACKED_SOURCES:
                    window.failures[key] = window.failures.get(key, 0) + 1
                else:
                    window.untracked += 1
                if secret_hash is not None and len(window.failed_secrets) < MAX_TRACKED_SOURCES:
                    window.failed_secrets.add(secret_hash)
            agg = window.aggregates.get((kind, key))
            if agg is None:
                overflow = len(window.aggregates) >= MAX_AUDITED_SOURCES
                agg_key = (kind, _OVERFLOW if overflow else key)
                agg = window.aggregates.get(agg_key)
                if agg is None:
                    agg = FailureAggregate(
                        kind, None if overflow else source, window.start,
                        self.window_seconds, first=now, last=now,
                        path=sample_path(path),
                        user_agent=(user_agent or "")[:MAX_SAMPLE_CHARS] or None,
                        request_id=request_id, overflow=overflow,
                    )  # fmt: skip
                    window.aggregates[agg_key] = agg
                if overflow and new_source:
                    agg.sources += 1
            agg.last = now
            if throttled:
                agg.throttled += 1
                return
            agg.count += 1
            if reason in agg.reasons or len(agg.reasons) < MAX_REASONS:
                agg.reasons[reason] = agg.reasons.get(reason, 0) + 1
            if token is not None:
                agg.named += 1
                if token not in agg.tokens and len(agg.tokens) < MAX_TOKEN_NAMES:
                    agg.tokens.append(token[:64])

    def next_flush(self) -> float | None:
        """When the oldest pending aggregate can be flushed (its window's end), or None."""
        with self._lock:
            if self._closed:
                return self.clock()
            if self._window.aggregates:
                return self._window.start + self.window_seconds
            return None

    def take(self, *, everything: bool = False) -> list[FailureAggregate]:
        """The aggregates of closed windows, oldest first; with ``everything`` (shutdown)
        the current window's too. Taken aggregates are forgotten."""
        with self._lock:
            self._roll(self.clock())
            windows = self._closed
            self._closed = []
            if everything and self._window.aggregates:
                windows.append(self._window)
                self._window = _Window(
                    self._window.start,
                    failures=self._window.failures,
                    failed_secrets=self._window.failed_secrets,
                )
        return [agg for window in windows for agg in window.aggregates.values()]
