"""A stored token row judged against a presented secret's hash (store.tokens.judge, pure):
current secret until it expires, the previous one only during the rotation overlap."""

from __future__ import annotations

from scimgate.store.tokens import TokenRow, judge

NOW = "2026-01-01T00:00:00.000000Z"
BEFORE = "2025-12-31T23:59:59.000000Z"
AFTER = "2026-01-01T00:00:01.000000Z"


def row(**kw: str | None) -> TokenRow:
    values: dict[str, str | None] = {
        "name": "okta", "secret_hash": "new", "expires": None, "last_used": BEFORE,
        "revoked": None, "previous_hash": None, "previous_expires": None, **kw,
    }  # fmt: skip
    return TokenRow(**values)  # type: ignore[arg-type]


def test_unknown_when_no_row_or_no_hash_matches() -> None:
    assert judge(None, "new", NOW).reason == "unknown"
    verdict = judge(row(previous_hash="old", previous_expires=AFTER), "other", NOW)
    assert (verdict.reason, verdict.name) == ("unknown", None)


def test_current_secret_until_it_expires() -> None:
    ok = judge(row(expires=AFTER), "new", NOW)
    assert (ok.reason, ok.name, ok.last_used) == ("ok", "okta", BEFORE)
    assert judge(row(expires=NOW), "new", NOW).reason == "expired"
    assert judge(row(), "new", NOW).reason == "ok"  # no expiry


def test_previous_secret_only_during_the_overlap() -> None:
    rotating = row(previous_hash="old", previous_expires=AFTER)
    assert judge(rotating, "old", NOW).reason == "ok"
    assert judge(row(previous_hash="old", previous_expires=NOW), "old", NOW).reason == "expired"
    assert judge(row(previous_hash="old", previous_expires=None), "old", NOW).reason == "expired"


def test_revoked_wins_over_everything() -> None:
    revoked = row(revoked=BEFORE, previous_hash="old", previous_expires=AFTER)
    assert judge(revoked, "new", NOW).reason == "revoked"
    assert judge(revoked, "old", NOW).reason == "revoked"
