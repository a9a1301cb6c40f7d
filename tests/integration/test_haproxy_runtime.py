"""Runtime API client against a real HAProxy (started by the tests, stopped by PID)."""

from __future__ import annotations

import hashlib
import http.client
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from scimgate.haproxy import (
    MAX_PAYLOAD_BYTES,
    EntryValidator,
    RuntimeAddress,
    RuntimeClient,
    RuntimeConnectionLost,
    RuntimeUnavailable,
    UnsafeRuntimeArgument,
)
from scimgate.haproxy.connection import Request as _Request
from scimgate.haproxy.mapfile import read_map_file, write_map_file
from scimgate.haproxy.payload import build_payload_chunks
from scimgate.haproxy.process import binary_version, check_config
from scimgate.haproxy.words import Word
from scimgate.policy.compiler import IDENTITY_KEY_RE as KEY_RE, MAP_VALUE_RE as VALUE_RE
from tests.fixtures.haproxy import RUNTIME_GLOBAL, RunningHAProxy

pytestmark = pytest.mark.haproxy

CONFIG = (
    RUNTIME_GLOBAL
    + """
frontend fe
    bind 127.0.0.1:$port0
    http-request deny deny_status 403 unless { req.fhdr(x-id),map($dir/ids.map) -m found }
    http-request return status 200 content-type text/plain string ok
"""
)

Factory = Callable[..., RunningHAProxy]


def key(n: int | str) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest().upper()


@pytest.fixture
def hx(haproxy_factory: Factory) -> RunningHAProxy:
    return haproxy_factory(CONFIG, files={"ids.map": ""})


@pytest.fixture
def client(hx: RunningHAProxy) -> Iterator[RuntimeClient]:
    c = hx.client()
    yield c
    c.close()


def ids_map(hx: RunningHAProxy) -> str:
    return str(hx.workdir / "ids.map")


class Http:
    """One keep-alive HTTP/1.1 connection, like a browser's."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def status(self, identity: str) -> int:
        self.conn.request("GET", "/", headers={"x-id": identity})
        resp = self.conn.getresponse()
        resp.read()
        if resp.will_close:
            self.conn.close()
        return resp.status


# --------------------------------------------------------------------------- basics


def test_address_parsing() -> None:
    assert RuntimeAddress.parse("unix:/run/a.sock") == RuntimeAddress("unix", path="/run/a.sock")
    assert RuntimeAddress.parse("/run/a.sock") == RuntimeAddress("unix", path="/run/a.sock")
    assert RuntimeAddress.parse("tcp:127.0.0.1:9999") == RuntimeAddress(
        "tcp", host="127.0.0.1", port=9999
    )
    assert RuntimeAddress.parse("tcp:[::1]:9999").host == "::1"
    for bad in ("run/a.sock", "tcp:127.0.0.1", "tcp:host:99999"):
        with pytest.raises(ValueError):
            RuntimeAddress.parse(bad)


def test_binary_and_config_check(hx: RunningHAProxy, client: RuntimeClient) -> None:
    assert binary_version() >= (2, 6, 0)
    assert client.version() == binary_version()
    ok, out = check_config(hx.config_path)
    assert ok, out
    bad = hx.workdir / "bad.cfg"
    bad.write_text("frontend x\n    bind 127.0.0.1:1\n    bogus-keyword\n")
    ok, out = check_config(bad)
    assert not ok and "bogus-keyword" in out


def test_unavailable_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnavailable, match="cannot connect"):
        RuntimeClient(f"unix:{tmp_path}/nothing.sock", timeout=1).show_info()


# --------------------------------------------------------------------------- semantics


def test_upsert_set_add_semantics(hx: RunningHAProxy, client: RuntimeClient) -> None:
    m, k = ids_map(hx), key("alice")
    assert client.set_map(m, k, ",eng,") is False  # set never creates
    assert client.show_map(m) == {}
    assert client.upsert_map(m, k, ",eng,") is True  # added
    assert client.upsert_map(m, k, ",eng,sre,") is False  # updated in place
    assert client.show_map_entries(m) == [(k, ",eng,sre,")]  # exactly once
    assert client.get_map(m, k) == ",eng,sre,"
    assert client.get_map(m, key("nobody")) is None
    assert client.map_info(m).entry_cnt == 1
    assert client.del_map(m, k) is True
    assert client.del_map(m, k) is False
    assert client.show_map(m) == {}


def test_delete_is_visible_to_the_very_next_request(
    hx: RunningHAProxy, client: RuntimeClient
) -> None:
    m, k = ids_map(hx), key("bob")
    web = Http(hx.port)
    assert web.status(k) == 403
    client.upsert_map(m, k, ",")
    assert web.status(k) == 200
    assert web.status(key("mallory")) == 403
    client.del_map(m, k)
    assert web.status(k) == 403  # same keep-alive connection, next request


def test_pipelined_upserts_all_applied(hx: RunningHAProxy, client: RuntimeClient) -> None:
    m = ids_map(hx)
    entries = {key(i): f",g{i % 7},all," for i in range(5000)}
    t0 = time.perf_counter()
    first = client.upsert_many(m, entries)
    elapsed = time.perf_counter() - t0
    assert (first.updated, first.added) == (0, 5000)
    assert client.show_map(m) == entries
    changed = {k: ",changed," for k in list(entries)[:2500]}
    result = client.upsert_many(m, changed)
    assert (result.updated, result.added) == (2500, 0)
    dump = client.show_map_entries(m)
    assert len(dump) == 5000 and len({k for k, _ in dump}) == 5000  # no duplicates
    assert client.show_map(m) == entries | changed
    assert client.delete_many(m, [*list(entries)[:1000], key("absent")]) == 1000
    assert client.map_info(m).entry_cnt == 4000
    print(f"\n5000 pipelined upserts (set miss + add) on an empty map: {elapsed * 1000:.0f} ms")


def test_pipeline_raw_and_speedup(hx: RunningHAProxy, client: RuntimeClient) -> None:
    m = ids_map(hx)
    n = 2000
    t0 = time.perf_counter()
    for i in range(n):
        client.add_map(m, key(i), ",")
    one_by_one = time.perf_counter() - t0
    client.clear_map(m)
    t0 = time.perf_counter()
    client.add_many(m, {key(i): "," for i in range(n)})
    piped = time.perf_counter() - t0
    assert client.map_info(m).entry_cnt == n
    replies = client.pipeline([f"get map {m} {key(1)}", "show info", f"del map {m} {key(1)}"])
    assert "found=yes" in replies[0] and "Pid:" in replies[1] and replies[2] == ""
    print(
        f"\nadd map x{n}: one by one {n / one_by_one:,.0f} ops/s, "
        f"pipelined {n / piped:,.0f} ops/s ({one_by_one / piped:.1f}x)"
    )


def test_atomic_replace_20000(hx: RunningHAProxy, client: RuntimeClient) -> None:
    m = ids_map(hx)
    old = {key(f"old{i}"): ",old," for i in range(500)}
    client.upsert_many(m, old)
    new = {key(f"new{i}"): f",g{i % 13},all," for i in range(20000)}
    web = Http(hx.port)
    assert web.status(key("old1")) == 200 and web.status(key("new1")) == 403
    result = client.replace_map(m, new)
    assert result.entries == 20000
    assert result.chunk_bytes and max(result.chunk_bytes) <= MAX_PAYLOAD_BYTES
    assert sum(result.chunk_bytes) > 20000 * 65
    assert client.show_map(m) == new  # all present, nothing old
    info = client.map_info(m)
    assert info.entry_cnt == 20000 and info.curr_ver == result.version
    assert web.status(key("old1")) == 403 and web.status(key("new1")) == 200
    # Replacing with nothing empties the map atomically.
    client.replace_map(m, {})
    assert client.show_map(m) == {} and client.map_info(m).entry_cnt == 0


def test_payload_chunks_never_exceed_limit() -> None:
    v = EntryValidator()
    pairs = [(v.key(key(i)), v.value(",a,b-c,d_e," * 1 + f"x{i},")) for i in range(3000)]
    path = v.map_path("/etc/haproxy/maps/ids.map")
    for limit in (MAX_PAYLOAD_BYTES, 4096, 200):
        chunks = build_payload_chunks(4294967295, path, pairs, limit)
        assert all(len(c) <= limit for c in chunks)
        body = b"".join(c.split(b"\n", 1)[1] for c in chunks)
        assert body.count(b"\n\n") == len(chunks)  # exactly one empty line per chunk: its end
        lines = [ln for ln in body.split(b"\n") if ln]
        assert len(lines) == len(pairs)
    assert min(len(c) for c in build_payload_chunks(1, path, pairs)[:-1]) > 15900
    # Even a Word that skipped the validator cannot smuggle a line into a payload.
    for evil in ("a\n\nshow info", "a b", "a;b", ""):
        with pytest.raises(UnsafeRuntimeArgument):
            build_payload_chunks(1, path, [(Word(evil), Word(",x,"))])


def test_oversized_payload_fails_loudly_not_silently(
    hx: RunningHAProxy, client: RuntimeClient
) -> None:
    """Why the limit exists: >bufsize → HAProxy closes without a word, nothing applied."""
    m = ids_map(hx)
    v = EntryValidator()
    version = int(client.execute(f"prepare map {m}").rsplit(" ", 1)[1])
    pairs = [(v.key(key(i)), Word(",x,")) for i in range(400)]
    (big,) = build_payload_chunks(version, Word(m), pairs, 40000)
    assert len(big) > 16384
    with pytest.raises(RuntimeConnectionLost):
        client.exchange([_Request(big, payload=True)])
    assert client.map_info(m).entry_cnt == 0  # nothing staged, and the client reconnected


# --------------------------------------------------------------------------- restarts, reloads


def test_reconnect_after_restart(hx: RunningHAProxy, client: RuntimeClient) -> None:
    pid1 = int(client.show_info()["Pid"])
    hx.stop()
    with pytest.raises(RuntimeUnavailable):
        client.show_info()
    hx.start()
    pid2 = int(client.show_info()["Pid"])
    assert pid2 != pid1 and client.worker_pid == pid2 and client.connects == 2
    client.upsert_map(ids_map(hx), key(1), ",")
    assert client.show_map(ids_map(hx)) == {key(1): ","}


def test_reload_detection_through_master(hx: RunningHAProxy, client: RuntimeClient) -> None:
    m = ids_map(hx)
    before = client.show_proc_master()
    assert before.master.pid == hx.pid and before.reloads == 0 and before.failed_reloads == 0
    assert client.show_info()["Pid"] == str(before.worker_pids[0])
    client.upsert_map(m, key("runtime-only"), ",")
    # The file is what a reload loads; runtime-only changes are lost by design.
    write_map_file(m, {key("in-file"): ",eng,"})
    assert read_map_file(m) == {key("in-file"): ",eng,"}
    after = hx.reload()
    assert after.reloads == before.reloads + 1 and after.master.pid == before.master.pid
    assert after.worker_pids != before.worker_pids
    # Our open connection still talks to the old worker: detect it and reconnect.
    assert client.worker_pid in before.worker_pids
    assert client.worker_pid not in client.show_proc_master().worker_pids
    client.reconnect()
    assert client.worker_pid in after.worker_pids
    assert client.show_map(m) == {key("in-file"): ",eng,"}
    assert Http(hx.port).status(key("in-file")) == 200


def test_map_file_is_atomic_and_validated(tmp_path: Path) -> None:
    p = tmp_path / "ids.map"
    write_map_file(p, {key(2): ",b,", key(1): ",a,"})
    text = p.read_text()
    assert text.startswith("#") and text.splitlines()[1:] == sorted(
        [f"{key(1)} ,a,", f"{key(2)} ,b,"]
    )
    with pytest.raises(UnsafeRuntimeArgument):
        write_map_file(p, {"bad key": ","})
    assert read_map_file(p) == {key(1): ",a,", key(2): ",b,"}  # untouched
    assert [f.name for f in tmp_path.iterdir()] == ["ids.map"]  # no temp left behind
    p.write_text(f"{key(3)} ,x,\nevil;show\\ info ,y,\n")
    with pytest.raises(UnsafeRuntimeArgument):
        read_map_file(p)


# --------------------------------------------------------------------------- hostile input

HOSTILE_KEYS = [
    key(1) + ";show info",
    key(1)[:-1] + "\n",
    key(1) + "\n",  # `$` in a naive regex would accept this
    key(1)[:32] + "\r" + key(1)[33:],
    key(1)[:32] + "\t" + key(1)[33:],
    key(1)[:32] + " " + key(1)[33:],
    key(1)[:62] + "<<",
    key(1)[:32] + "\\" + key(1)[33:],
    "#0x1",
    "#" + key(1)[1:],
    key(1).lower(),
    key(1)[:63] + "É",
    "\uff21" * 64,  # fullwidth A
    "A" * 10_000,
    "",
    None,
    b"A" * 64,
]
HOSTILE_VALUES = [
    ",eng,;show info",
    ",eng,\nadd map x y z",
    ",eng,\r",
    ",e g,",
    ",eng\t,",
    ",eng,<<",
    "<<",
    ",e\\ng,",
    "#0x1",
    ",ÉNG,",
    "," + "a" * 10_000 + ",",
    "",
    "eng",
    ",ENG,",
]


def _state(client: RuntimeClient, m: str) -> tuple[list[tuple[str, str]], int]:
    return client.show_map_entries(m), client.map_info(m).entry_cnt


def test_hostile_keys_and_values_never_reach_haproxy(hx: RunningHAProxy) -> None:
    m = ids_map(hx)
    with hx.client() as setup:
        setup.upsert_many(m, {key(i): ",eng," for i in range(3)})
        before = _state(setup, m)
    fresh = hx.client()  # never connected: any byte sent would open a connection
    good_k, good_v = key(1), ",eng,"
    attempts: list[Callable[[], object]] = []
    for bad in HOSTILE_KEYS:
        attempts += [
            lambda b=bad: fresh.add_map(m, b, good_v),
            lambda b=bad: fresh.set_map(m, b, good_v),
            lambda b=bad: fresh.del_map(m, b),
            lambda b=bad: fresh.get_map(m, b),
            lambda b=bad: fresh.upsert_map(m, b, good_v),
            lambda b=bad: fresh.upsert_many(m, {good_k: good_v, b: good_v}),
            lambda b=bad: fresh.delete_many(m, [good_k, b]),
            lambda b=bad: fresh.replace_map(m, {good_k: good_v, b: good_v}),
        ]
    for bad in HOSTILE_VALUES:
        attempts += [
            lambda b=bad: fresh.add_map(m, good_k, b),
            lambda b=bad: fresh.set_map(m, good_k, b),
            lambda b=bad: fresh.upsert_map(m, good_k, b),
            lambda b=bad: fresh.upsert_many(m, {good_k: b}),
            lambda b=bad: fresh.replace_map(m, {good_k: good_v, key(9): b}),
        ]
    for bad_path in ("ids.map", "/x/ids.map;show info", "/x/a b.map", "/x/../etc/passwd", "#0"):
        attempts += [
            lambda p=bad_path: fresh.show_map(p),
            lambda p=bad_path: fresh.upsert_map(p, good_k, good_v),
            lambda p=bad_path: fresh.clear_map(p),
        ]
    for raw in ("show info;show info", "show info\nshow info", "add map m <<", "", "show\x00"):
        attempts += [lambda r=raw: fresh.execute(r), lambda r=raw: fresh.pipeline(["help", r])]
    for attempt in attempts:
        with pytest.raises(UnsafeRuntimeArgument):
            attempt()
    assert fresh.connects == 0, "a rejected argument must be rejected before connecting"
    with hx.client() as check:
        assert _state(check, m) == before
        assert "Pid" in check.show_info()


def test_custom_validator_cannot_widen_past_cli_safe_chars(hx: RunningHAProxy) -> None:
    lax = EntryValidator(key_re=re.compile(r".+"), value_re=re.compile(r".+"))
    c = RuntimeClient(hx.stats_address, validator=lax)  # type: ignore[arg-type]
    m = ids_map(hx)
    c.upsert_map(m, "alice@example.com", ",eng,")  # a narrower custom alphabet works
    assert c.get_map(m, "alice@example.com") == ",eng,"
    for bad in ("a;show info", "a b", "a<<", "#0x1", "a\\b"):
        with pytest.raises(UnsafeRuntimeArgument):
            c.upsert_map(m, bad, ",")
    assert c.show_map(m) == {"alice@example.com": ",eng,"}
    c.close()


def test_validators_are_fullmatch() -> None:
    assert KEY_RE.fullmatch(key(1)) and VALUE_RE.fullmatch(",") and VALUE_RE.fullmatch(",a,b,")
    v = EntryValidator()
    for bad in (key(1) + "\n", ",a,\n"):
        with pytest.raises(UnsafeRuntimeArgument):
            v.key(bad) if bad.startswith(key(1)) else v.value(bad)


# --------------------------------------------------------------------------- property

_hex = "0123456789ABCDEF"
text_keys = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=_hex + "abcdef#; \t\n\\<", min_size=62, max_size=66),
    st.from_regex(KEY_RE, fullmatch=True),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(k=text_keys, v=st.one_of(st.from_regex(VALUE_RE, fullmatch=True), st.text(max_size=20)))
def test_random_keys_round_trip_or_are_rejected(
    hx: RunningHAProxy, client: RuntimeClient, k: str, v: str
) -> None:
    m = ids_map(hx)
    valid = bool(KEY_RE.fullmatch(k)) and bool(VALUE_RE.fullmatch(v)) and len(v) < 4096
    if not valid:
        connects = client.connects
        with pytest.raises(UnsafeRuntimeArgument):
            client.add_map(m, k, v)
        assert client.connects == connects
        assert client.map_info(m).entry_cnt == 0
        return
    client.add_map(m, k, v)
    assert client.get_map(m, k) == v
    assert client.show_map_entries(m) == [(k, v)]
    assert client.del_map(m, k) is True
    assert client.show_map(m) == {}
