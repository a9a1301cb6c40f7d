"""The JWKS fetcher and key store over real loopback HTTP: ETag revalidation, Cache-Control,
size limit, bounded retries with backoff, redirects only to https/loopback, the overlap of
withdrawn keys and a failed fetch keeping the keys."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scimgate.instance.jwks_keys import FetchError, KeyStore, fetch
from scimgate.policy.model import JwksSource
from tests.support.jwks_issuer import JwksIssuer


@pytest.fixture
def idp() -> Iterator[JwksIssuer]:
    with JwksIssuer(max_age=120) as issuer:
        issuer.add_key("k1")
        yield issuer


def scripted(
    replies: list[tuple[int, dict[str, str], bytes]],
) -> tuple[ThreadingHTTPServer, list[str]]:
    """A server answering each GET with the next scripted reply (the last one repeats)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            status, headers, body = replies[min(len(seen), len(replies)) - 1]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_etag_and_cache_control(idp: JwksIssuer, tmp_path: Path) -> None:
    store = KeyStore(tmp_path, JwksSource(), idp.issuer)
    state, rotation = store.refresh(now=1000.0)
    assert rotation.added == ["k1"] and state.etag and state.last_error is None
    assert state.next_fetch == 1000.0 + 120  # max-age=120 within [60, 3600]
    state, rotation = store.refresh(now=1200.0)
    assert not rotation and idp.not_modified == 1  # If-None-Match -> 304, keys kept
    assert [k.kid for k in state.keys] == ["k1"]


def test_withdrawn_key_stays_for_the_overlap(idp: JwksIssuer, tmp_path: Path) -> None:
    store = KeyStore(tmp_path, JwksSource(overlap_seconds=100), idp.issuer)
    store.refresh(now=1000.0)
    idp.add_key("k2", "ec256")
    idp.withdraw("k1")
    state, rotation = store.refresh(now=2000.0)
    assert rotation.added == ["k2"] and rotation.removed == ["k1"] and not rotation.expired
    assert [k.kid for k in store.pinned(now=2099.0)] == ["k1", "k2"]
    assert state.next_expiry(100) == 2100.0
    state, rotation = store.refresh(now=2100.0)
    assert rotation.expired == ["k1"] and [k.kid for k in store.pinned(now=2100.0)] == ["k2"]
    store.prune_files()
    assert sorted(p.name for p in tmp_path.glob("kid-*.pem")) == [state.keys[0].file]


def test_failed_fetch_keeps_the_keys(idp: JwksIssuer, tmp_path: Path) -> None:
    store = KeyStore(tmp_path, JwksSource(retries=0), idp.issuer)
    store.refresh(now=1000.0)
    idp.__exit__()  # the issuer goes away
    state, rotation = store.refresh(now=5000.0)
    assert not rotation and state.last_error and [k.kid for k in state.keys] == ["k1"]
    assert state.next_fetch == 5000.0 + 60  # retried at the floor


def test_retries_with_backoff_then_success() -> None:
    ok = json.dumps({"keys": []}).encode()
    server, seen = scripted([(503, {}, b""), (429, {}, b""), (200, {"ETag": '"a"'}, ok)])
    slept: list[float] = []
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/keys"
        found = fetch(url, timeout=2, max_bytes=1024, retries=3, sleep=slept.append)
        assert found.status == 200 and found.etag == '"a"' and len(seen) == 3
        assert slept == [0.5, 1.0]
        seen.clear()
        with pytest.raises(FetchError, match="HTTP 503"):
            fetch(url, timeout=2, max_bytes=1024, retries=0, sleep=slept.append)
    finally:
        server.shutdown()


def test_client_errors_are_not_retried_and_size_is_limited() -> None:
    server, seen = scripted([(404, {}, b"")])
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/keys"
        with pytest.raises(FetchError, match="HTTP 404"):
            fetch(url, timeout=2, max_bytes=1024, retries=3, sleep=lambda _s: None)
        assert len(seen) == 1
    finally:
        server.shutdown()
    server, seen = scripted([(200, {}, b"x" * 5000)])
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/keys"
        with pytest.raises(FetchError, match="larger than 4096"):
            fetch(url, timeout=2, max_bytes=4096, retries=0)
    finally:
        server.shutdown()


def test_redirect_to_plain_http_elsewhere_is_refused() -> None:
    server, _seen = scripted([(302, {"Location": "http://203.0.113.9/keys"}, b"")])
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/keys"
        with pytest.raises(FetchError, match="must be https"):
            fetch(url, timeout=2, max_bytes=1024, retries=0)
    finally:
        server.shutdown()
    with pytest.raises(FetchError, match="must be https"):
        fetch("http://203.0.113.9/keys", timeout=2, max_bytes=1024, retries=0)


def test_discovery_issuer_mismatch_is_an_error(idp: JwksIssuer, tmp_path: Path) -> None:
    store = KeyStore(tmp_path, JwksSource(retries=0), idp.issuer + "/")
    state, _rotation = store.refresh(now=1.0)
    assert state.keys == [] and "issuer" in (state.last_error or "")


def test_follower_applies_only_changes_retries_a_failed_apply_and_audits(
    idp: JwksIssuer, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    from scimgate.instance.jwks_follower import KeyFollower, key_rows
    from scimgate.store import migrate, tables
    from scimgate.store.db import Database

    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    migrate.upgrade(db)
    store = KeyStore(tmp_path / "keys", JwksSource(overlap_seconds=50), idp.issuer)
    clock = [1000.0]
    store.refresh(now=clock[0])  # what `up` renders its first config from
    applied: list[int] = []
    fail = [False]

    def apply() -> None:
        if fail[0]:
            raise RuntimeError("haproxy -c said no")
        applied.append(len(store.pinned(now=clock[0])))

    follower = KeyFollower(store, db, apply, clock=lambda: clock[0])
    clock[0] = 1200.0
    follower.step()  # 304, nothing new
    assert applied == []
    idp.add_key("k2", "ec384")
    idp.withdraw("k1")
    fail[0] = True
    clock[0] = 1400.0
    with pytest.raises(RuntimeError):
        follower.step()
    fail[0] = False
    clock[0] = 1410.0
    follower.step()  # nothing new in the JWKS, but the failed apply is done now
    assert applied == [2]  # k1 inside its overlap, k2
    assert [r["kid"] for r in key_rows(store, now=1410.0)] == ["k1", "k2"]
    assert str(key_rows(store, now=1410.0)[0]["state"]).startswith("withdrawn, accepted until")
    clock[0] = 1460.0  # k1's overlap (50 s from 1400) is over
    follower.step()
    assert applied == [2, 1]
    with db.read() as conn:
        rows = conn.execute(
            sa.select(tables.audit_events.c.operation, tables.audit_events.c.detail).where(
                tables.audit_events.c.kind == "jwt.keys"
            )
        ).all()
    assert [
        (op, [k["kid"] for k in d["added"]], [k["kid"] for k in d["expired"]]) for op, d in rows
    ] == [
        ("rotate", ["k2"], []),
        ("rotate", [], ["k1"]),
    ]
    db.dispose()


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("kids", [[], ["-k1"], ["k1", "a=b+/c:~.", "e1"]])
def test_rendered_jwks_configs_pass_haproxy_check(
    tmp_path: Path, kids: list[str], cache: bool
) -> None:
    import base64

    from scimgate.haproxy.process import check_config
    from scimgate.policy import parse_policy, render_config
    from scimgate.policy.jwks import PinnedKey
    from tests.support.jwks_issuer import new_key

    pinned = []
    for kid in kids:
        key = new_key(kid, "ec256" if kid.startswith("e") else "rsa2048")
        path = tmp_path / f"{len(pinned)}.pem"
        path.write_bytes(key.public_pem())
        pinned.append(PinnedKey(kid, key.alg, str(path)))
    for name in ("identities.map", "identities-recent.map"):
        (tmp_path / name).write_text("")
    policy = parse_policy(
        "identity:\n  source: jwt\n  jwt:\n    issuer: https://i.example/\n    audience: a\n"
        f"    cutoff: true\n    jwks: {{}}\n    verified_cache: {{enabled: {str(cache).lower()}}}\n"
        "routes:\n  - name: home\n    from: {path_prefix: /}\n    allow_groups: [any]\n"
        "    to: {return: hi}\n"
    )
    cfg = tmp_path / "h.cfg"
    cfg.write_text(
        render_config(
            policy, map_dir=str(tmp_path), hmac_secret_b64=base64.b64encode(b"k" * 32).decode(),
            stats_socket=str(tmp_path / "s.sock"), jwt_keys=pinned,
        )
    )  # fmt: skip
    ok, output = check_config(cfg)
    assert ok, output
