"""The console's pure pieces: CSRF tokens, the sign-in throttle's bounds, the redirect
after sign-in, the latency chart, form timestamps."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from scimgate.app import admins
from scimgate.console.chart import latency_chart
from scimgate.console.guard import safe_next, set_cookie
from scimgate.console.pages import _timestamp


def test_csrf_token_is_bound_to_the_session_secret() -> None:
    token = admins.csrf_token("session-a")
    assert admins.csrf_ok("session-a", token)
    assert not admins.csrf_ok("session-b", token)
    assert not admins.csrf_ok("session-a", "")
    assert not admins.csrf_ok("session-a", None)
    # not derivable from what the database stores
    assert token != admins.hash_secret("session-a")


def test_throttle_blocks_a_source_and_a_name_then_forgets_them_with_the_window() -> None:
    now = [1000.0]
    throttle = admins.SignInThrottle(window=60, limit=3, max_keys=8, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.blocked("10.0.0.1", "alice") == 0
        throttle.failed("10.0.0.1", "alice")
    assert throttle.blocked("10.0.0.1", "bob") > 0  # the source is over the limit
    assert throttle.blocked("10.0.0.2", "ALICE") > 0  # so is the name, from anywhere
    assert throttle.blocked("10.0.0.2", "bob") == 0
    now[0] += 60
    assert throttle.blocked("10.0.0.1", "alice") == 0


def test_throttle_memory_and_audit_are_bounded() -> None:
    throttle = admins.SignInThrottle(window=60, limit=1000, max_keys=16, clock=lambda: 5.0)
    audited = 0
    for i in range(admins.MAX_AUDITED_FAILURES + 40):
        audit_it, _ = throttle.failed(f"10.0.{i // 256}.{i % 256}", f"user{i}")
        audited += audit_it
    assert audited == admins.MAX_AUDITED_FAILURES
    assert len(throttle._failures) <= 17  # max_keys + the shared overflow counter


def test_after_sign_in_only_console_paths() -> None:
    assert safe_next("/console/people?q=a") == "/console/people?q=a"
    for bad in ("https://evil.example/", "//evil.example/console/", "/scim/v2/Users", None, ""):
        assert safe_next(bad) == "/console/"


def test_latency_chart_scales_and_escapes_nothing_from_input() -> None:
    chart = latency_chart([(10.0, 12.0), (1800.0, 40.0), (3500.0, 7.0)])
    assert chart.points == 3 and chart.p50_ms == 12.0 and chart.max_ms == 40.0
    assert chart.svg.count("<circle") == 3 and "50 ms" in chart.svg
    empty = latency_chart([])
    assert empty.points == 0 and "no changes applied" in empty.svg


def test_form_timestamps() -> None:
    assert _timestamp("2026-12-03T14:05") == "2026-12-03T14:05:00.000000Z"
    assert _timestamp("2026-12-03T14:05:06.5Z") == "2026-12-03T14:05:06.500000Z"
    assert _timestamp("yesterday") == ""


def _request(scheme: str) -> Request:
    return Request({"type": "http", "scheme": scheme, "method": "GET", "path": "/console/",
                    "headers": [], "query_string": b"", "server": ("127.0.0.1", 1)})  # fmt: skip


def test_cookie_is_secure_exactly_when_the_request_came_over_tls() -> None:
    for scheme, secure in (("https", True), ("http", False)):
        response = Response()
        set_cookie(response, _request(scheme), "scimgate_console", "s", 60)
        attrs = [a.strip().lower() for a in response.headers["set-cookie"].split(";")]
        assert ("secure" in attrs) is secure
        assert "httponly" in attrs and "samesite=strict" in attrs
