"""The follower's refresh on an unknown kid, over a real loopback issuer and SQLite audit
trail, with the kids HAProxy recorded given directly and a controlled clock: a fetch per
interval at most, a kid looked for once per table expiry, the audit event bounded.
(tests/e2e/test_jwks_unknown_kid.py runs the same against a real HAProxy's table.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from scimgate.instance.jwks_follower import KeyFollower
from scimgate.instance.jwks_keys import KeyStore
from scimgate.policy.model import JwksSource
from scimgate.policy.render_identity import KID_MISS_EXPIRE_SECONDS
from scimgate.store import migrate, tables
from scimgate.store.db import Database
from tests.support.jwks_issuer import JwksIssuer


@pytest.fixture
def idp() -> Iterator[JwksIssuer]:
    with JwksIssuer(max_age=3600) as issuer:
        issuer.add_key("k1")
        yield issuer


def follower(
    idp: JwksIssuer, tmp_path: Path, recorded: list[str], **source: object
) -> tuple[KeyFollower, list[float], list[int]]:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    migrate.upgrade(db)
    store = KeyStore(tmp_path / "keys", JwksSource(**source), idp.issuer)  # type: ignore[arg-type]
    clock = [1000.0]
    store.refresh(now=clock[0])
    applied: list[int] = []
    f = KeyFollower(
        store,
        db,
        lambda: applied.append(len(store.pinned(now=clock[0]))),
        clock=lambda: clock[0],
        misses=lambda: list(recorded),
    )
    return f, clock, applied


def audited(f: KeyFollower) -> list[tuple[str | None, dict[str, object]]]:
    ev = tables.audit_events
    with f.db.read() as conn:
        rows = conn.execute(
            sa.select(ev.c.operation, ev.c.detail).where(ev.c.kind == "jwt.keys.refresh")
        ).all()
    return [(op, detail) for op, detail in rows]


def test_unknown_kid_fetches_at_once_then_rate_limited(idp: JwksIssuer, tmp_path: Path) -> None:
    recorded: list[str] = []
    f, clock, applied = follower(idp, tmp_path, recorded, unknown_kid_refresh_seconds=30)
    try:
        assert f.check_misses() is False  # nothing recorded: no fetch
        fetches = idp.jwks_fetches
        recorded.append("k1")
        assert f.check_misses() is False  # a held kid is no miss
        idp.add_key("k2", "ec256")
        recorded.append("k2")
        clock[0] += 1
        assert f.check_misses() is True
        assert idp.jwks_fetches == fetches + 1 and applied == [2]
        # junk kids inside the interval: no fetch; after it, one fetch for all of them
        recorded += [f"junk{i}" for i in range(50)]
        clock[0] += 10
        assert f.check_misses() is False
        assert idp.jwks_fetches == fetches + 1
        clock[0] += 21
        assert f.check_misses() is True
        assert idp.jwks_fetches == fetches + 2 and applied == [2]  # nothing new: no reload
        # the same junk, an interval later but still in the table: looked for already
        clock[0] += 31
        assert f.check_misses() is False
        # once the table entry could have expired and come back, it is looked for again
        clock[0] += KID_MISS_EXPIRE_SECONDS
        assert f.check_misses() is True
        assert f.forced_refreshes == 3
        events = audited(f)
        assert [op for op, _d in events] == ["unknown_kid"] * 3
        first, second = events[0][1], events[1][1]
        assert first["reason"] == "unknown_kid" and first["found"] == ["k2"]
        assert first["kids"] == ["k2"] and first["unknown_kids"] == 1
        assert second["found"] == [] and second["unknown_kids"] == 50
        assert len(second["kids"]) == 3  # type: ignore[arg-type]  # bounded detail
    finally:
        f.db.dispose()


def test_off_when_disabled(idp: JwksIssuer, tmp_path: Path) -> None:
    f, _clock, _applied = follower(idp, tmp_path, ["k9"], refresh_on_unknown_kid=False)
    try:
        assert f.misses is None
    finally:
        f.db.dispose()


def test_rendered_rules_record_only_unknown_kids() -> None:
    from scimgate.policy import parse_policy
    from scimgate.policy.jwks import PinnedKey
    from scimgate.policy.render_identity import JWT_KID_MISS_TABLE, jwt_kid_miss_table, jwt_rules

    text = (
        "identity:\n  source: jwt\n  jwt:\n    issuer: https://i.example/\n    audience: a\n"
        "    jwks: {%s}\nroutes:\n  - name: home\n    from: {path_prefix: /}\n"
        "    allow_groups: [any]\n    to: {return: hi}\n"
    )
    policy = parse_policy(text % "algorithms: [RS256, ES256]")
    rules = jwt_rules(policy, False, [PinnedKey("k1", "RS256", "/k/1.pem")])
    track = [r for r in rules if JWT_KID_MISS_TABLE in r]
    assert len(track) == 1 and "!scimgate_jwt_kid_known" in track[0]
    assert "scimgate_jwt_kid_shape" in track[0] and "!{ sc_tracked(2) }" in track[0]
    # the algorithms the JWKS may bring, not only the held keys' (a new key may be ES256)
    assert "scimgate_jwt_alg_listed" in track[0] and "scimgate_jwt_alg_ok" not in track[0]
    assert "acl scimgate_jwt_alg_listed var(txn.scimgate_jwt_alg) -m str RS256 ES256" in rules
    assert "acl scimgate_jwt_kid_known var(txn.scimgate_jwt_kid) -m str -- k1" in rules
    assert "size 1000 expire 60s" in (jwt_kid_miss_table(policy) or "")
    off = parse_policy(text % "refresh_on_unknown_kid: false")
    assert not [r for r in jwt_rules(off, False, []) if JWT_KID_MISS_TABLE in r]
    assert jwt_kid_miss_table(off) is None
