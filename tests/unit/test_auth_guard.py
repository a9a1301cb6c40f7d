"""api.auth_guard (pure, with a fake clock): failed authentication counted per source and
window, the limit that turns 401s into 429s, the bounded aggregates the flush audits."""

from __future__ import annotations

import json

import pytest

from scimgate.api.auth_guard import (
    MAX_AUDITED_SOURCES,
    MAX_PENDING_WINDOWS,
    MAX_SAMPLE_CHARS,
    MAX_TOKEN_NAMES,
    MAX_TRACKED_SOURCES,
    AuthGuard,
    FailureAggregate,
    sample_path,
)

# Documented in docs/operations.md ("Failed authentication"): what one aggregate event can
# hold at most (its columns and its JSON detail, in bytes), and how many a window can have.
MAX_EVENT_ROW_BYTES = 1536
MAX_EVENTS_PER_WINDOW = MAX_AUDITED_SOURCES + 2


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fail(guard: AuthGuard, source: str | None, reason: str = "unknown", **kw: object) -> None:
    kind = "token.expired_use" if reason == "expired" else "auth.failed"
    guard.record(source, kind=kind, reason=reason, path="/scim/v2/Users", **kw)  # type: ignore[arg-type]


def row_bytes(agg: FailureAggregate) -> int:
    """The bytes an event stores: its columns as audit.append bounds them, plus its detail."""
    columns = [
        "2026-11-28T14:24:36.192086Z", agg.kind, agg.actor or "", (agg.source or "")[:128],
        agg.user_agent or "", agg.request_id or "", "0" * 64, "0" * 64, "9" * 19,
    ]  # fmt: skip
    return len(json.dumps(agg.audit_detail()).encode()) + sum(len(c.encode()) for c in columns)


def test_one_aggregate_per_source_and_window_with_counts_and_reasons() -> None:
    clock = Clock(1_800_000_010.5)
    guard = AuthGuard(60, 100, clock=clock)
    for reason in ("missing", "unknown", "unknown", "revoked"):
        fail(guard, "10.0.0.1", reason, token="okta" if reason == "revoked" else None)
    fail(guard, "10.0.0.2")
    fail(guard, "10.0.0.1", "expired", token="entra")
    assert guard.take() == []  # the window is still open
    clock.now += 60
    aggs = {(a.kind, a.source): a for a in guard.take()}
    assert set(aggs) == {
        ("auth.failed", "10.0.0.1"), ("auth.failed", "10.0.0.2"),
        ("token.expired_use", "10.0.0.1"),
    }  # fmt: skip
    one = aggs[("auth.failed", "10.0.0.1")]
    assert one.count == 4 and one.reasons == {"missing": 1, "unknown": 2, "revoked": 1}
    assert one.tokens == ["okta"] and one.actor is None  # not every failure named okta
    detail = one.audit_detail()
    assert detail["window_start"] == "2027-01-15T08:00:00.000000Z"
    assert detail["window_seconds"] == 60 and detail["path"] == "/scim/v2/Users"
    expired = aggs[("token.expired_use", "10.0.0.1")]
    assert expired.reasons == {"expired": 1} and expired.actor == "entra"
    assert guard.take() == [] and guard.next_flush() is None  # taken once


def test_limit_turns_into_retry_after_until_the_window_ends() -> None:
    clock = Clock(1_800_000_000.0)
    guard = AuthGuard(60, 3, clock=clock)
    for _ in range(3):
        assert guard.retry_after("10.0.0.1") is None
        fail(guard, "10.0.0.1")
    clock.now += 15.2
    assert guard.retry_after("10.0.0.1") == 45  # ceil(60 - 15.2)
    assert guard.retry_after("10.0.0.2") is None  # per source
    guard.record("10.0.0.1", kind="auth.failed", reason="throttled", throttled=True)
    clock.now += 45
    assert guard.retry_after("10.0.0.1") is None  # a new window
    (agg,) = guard.take()
    assert agg.count == 3 and agg.throttled == 1 and agg.audit_detail()["throttled"] == 1


def test_sources_past_the_audit_cap_fold_into_one_overflow_aggregate_per_kind() -> None:
    clock = Clock()
    guard = AuthGuard(60, 1000, clock=clock)
    extra = 25
    for i in range(MAX_AUDITED_SOURCES + extra):
        fail(guard, f"10.1.0.{i}")
        fail(guard, f"10.1.0.{i}")
        fail(guard, f"10.2.0.{i}", "expired")
    aggs = guard.take(everything=True)
    assert len(aggs) == MAX_EVENTS_PER_WINDOW
    overflow = [a for a in aggs if a.overflow]
    assert {a.kind for a in overflow} == {"auth.failed", "token.expired_use"}
    assert sum(a.count for a in aggs) == 3 * (MAX_AUDITED_SOURCES + extra)
    folded = next(a for a in overflow if a.kind == "auth.failed")
    assert folded.source is None and folded.audit_detail()["overflow"] is True
    assert folded.sources == extra + MAX_AUDITED_SOURCES // 2 and folded.count == 2 * folded.sources


def test_tracked_sources_are_bounded_and_the_rest_share_one_counter() -> None:
    guard = AuthGuard(60, 2, clock=Clock())
    for i in range(MAX_TRACKED_SOURCES):
        fail(guard, f"s{i}")
    assert guard.retry_after("late-1") is None
    fail(guard, "late-1")
    fail(guard, "late-2")  # untracked sources share one counter: now at the limit
    assert guard.retry_after("late-3") is not None
    assert guard.retry_after("s0") is None  # tracked sources keep their own count


def test_every_stored_field_is_bounded() -> None:
    guard = AuthGuard(60, 10**9, clock=Clock())
    for i in range(50):
        guard.record(
            "f" * 300, kind="auth.failed", reason=f"r{i % 20}", token=f"{i:0>64}",
            path="/\ud800é\"\\\x00" * 20_000, user_agent="\xff" * 60_000,
            request_id="r" * 64,
        )  # fmt: skip
    (agg,) = guard.take(everything=True)
    assert len(agg.tokens) == MAX_TOKEN_NAMES and agg.actor is None
    assert len(agg.reasons) == 8
    assert agg.path is not None and len(agg.path) == MAX_SAMPLE_CHARS and agg.path.isascii()
    assert '"' not in agg.path and "\\" not in agg.path  # nothing for JSON to escape
    assert agg.user_agent is not None and len(agg.user_agent) == MAX_SAMPLE_CHARS
    agg.count = agg.throttled = agg.sources = 2**63  # the largest counts
    agg.overflow = True
    assert row_bytes(agg) <= MAX_EVENT_ROW_BYTES


def test_pending_windows_are_bounded_when_no_flush_runs() -> None:
    clock = Clock()
    guard = AuthGuard(1, 10, clock=clock)
    for _ in range(MAX_PENDING_WINDOWS + 5):
        fail(guard, "10.0.0.1")
        clock.now += 1
    aggs = guard.take()
    assert len(aggs) == MAX_PENDING_WINDOWS and guard.dropped_windows == 5


def test_sample_path_is_escaped_ascii() -> None:
    assert sample_path("/scim/v2/Users/abc") == "/scim/v2/Users/abc"
    assert sample_path("/a b/\ud800/é") == "/a%20b/%ED%A0%80/%C3%A9"
    assert len(sample_path("/" + "x" * 60_000)) == MAX_SAMPLE_CHARS


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AuthGuard(0, 10)
    with pytest.raises(ValueError):
        AuthGuard(60, 0)
