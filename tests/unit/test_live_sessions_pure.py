"""The pure parts of live-session cutting: the tracked key's grammar, which routes a map
value still allows, the rendered rules, and the parsers of HAProxy's `show sess` /
`show table` replies (texts as HAProxy 2.6.12 and 3.0.11 printed them here)."""

from __future__ import annotations

import pytest

from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.errors import UnsafeRuntimeArgument
from scimgate.haproxy.sessions import (
    WorkerStreams,
    parse_show_sess,
    parse_show_table,
    parse_stream_detail,
)
from scimgate.policy.jwtmint import demo_policy_yaml
from scimgate.policy.model import Policy, parse_policy
from scimgate.policy.render import render_config
from scimgate.policy.sessions import (
    SESSIONS_TABLE,
    parse_tracked,
    route_allows,
    tracking_rules,
)

KEY = "AB" * 32

SHOW_SESS_26 = (
    "0x55bbf7aab0b0: proto=tcpv4 src=127.0.0.1:48294 fe=fe_scimgate be=demo_ws_echo srv=s1 "
    "ts=00 epoch=0 age=0s calls=3 rate=0 cpu=0 lat=0 rq[f=8848202h,i=0,an=00h,rx=1h,wx=,ax=] "
    "rp[f=88048202h,i=0,an=00h,rx=1h,wx=,ax=] scf=[8,0h,fd=13] scb=[8,11h,fd=14] exp=1s rc=0 c_exp=\n"
    "0x7fde34039d90: proto=unix_stream src=unix:1 fe=GLOBAL be=<NONE> srv=<none> ts=00 epoch=0 "
    "age=0s calls=1 rate=0 cpu=0 lat=0 rq[f=c08000h,i=0,an=00h,rx=,wx=,ax=] exp= rc=0 c_exp=\n\n"
)
DETAIL_30 = (
    "0x55afc9c24b10: [03/Dec/2026:13:35:47.826304] id=0 proto=tcpv4 source=127.0.0.1:41114\n"
    "  flags=0x400c4a, conn_retries=0, conn_exp=<NEVER> conn_et=0x000 srv_conn=0x55afc9ba3a30, "
    "pend_pos=(nil) waiting=0 epoch=0\n"
    "  frontend=fe_scimgate (id=2 mode=http), listener=? (id=1) addr=127.0.0.1:48887\n"
    "  backend=be (id=3 mode=http) addr=127.0.0.1:41854\n"
)
TABLE_30 = (
    "# table: scimgate_sessions, type: string, size:204800, used:2\n"
    f"0x55afc9bcf9e8: key={KEY}|ws|fe_scimgate|127.0.0.1:41114 use=1 exp=9995 shard=0\n"
    f"0x55afc9bcf9f0: key={KEY}|ws|fe_scimgate|127.0.0.1:41115 use=0 exp=5000 shard=0\n\n"
)


def policy() -> Policy:
    return parse_policy(demo_policy_yaml(ws_port=9999))


def test_tracked_key_round_trip_and_refusals() -> None:
    t = parse_tracked(f"{KEY}|ws|fe_scimgate|127.0.0.1:41114")
    assert t is not None and (t.identity_key, t.route, t.frontend, t.client) == (
        KEY, "ws", "fe_scimgate", "127.0.0.1:41114",
    )  # fmt: skip
    assert parse_tracked(f"{KEY}|ws|fe|::1:5555") is not None  # IPv6 as %ci prints it
    for bad in (
        f"{KEY.lower()}|ws|fe|127.0.0.1:1",  # not our key grammar
        f"{KEY}|WS|fe|127.0.0.1:1",
        f"{KEY}|ws|fe|127.0.0.1:1 x",
        f"{KEY}|ws|fe|127.0.0.1:1\n",
        f"{KEY}|ws|fe|unix:1",
        "",
    ):
        assert parse_tracked(bad) is None, bad


@pytest.mark.parametrize(
    ("route", "value", "allowed"),
    [
        ("ws", ",", True),  # any active user: a known entry with no group
        ("ws", ",admins,", True),
        ("ws", None, False),  # deleted / deactivated
        ("ws", "-", False),  # the overlay tombstone
        ("admin", ",engineering,", False),
        ("admin", ",admins,engineering,", True),
        ("admin", ",xadmins,", False),  # a slug is matched whole
        ("health", ",admins,", False),  # an open route is never tracked
        ("gone", ",admins,", False),  # a route the policy no longer has
    ],
)
def test_route_allows(route: str, value: str | None, allowed: bool) -> None:
    assert route_allows(policy(), route, value) is allowed


def test_rendered_config_tracks_allowed_gated_requests_last() -> None:
    text = render_config(
        policy(), map_dir="/tmp/maps", hmac_secret_b64="c2VjcmV0c2VjcmV0c2VjcmV0", check_files=False
    )
    lines = [line.strip() for line in text.splitlines()]
    allow = lines.index("http-request set-var(txn.scimgate_decision) str(allow)")
    track = tracking_rules()[-1]
    assert lines[allow + 4] == track  # right after the final allow (and its comment)
    assert f"backend {SESSIONS_TABLE}" in lines


def test_show_sess_and_detail_parsers() -> None:
    streams = parse_show_sess(SHOW_SESS_26)
    assert [(s.ptr, s.client, s.frontend) for s in streams] == [
        ("0x55bbf7aab0b0", "127.0.0.1:48294", "fe_scimgate"),
        ("0x7fde34039d90", "unix:1", "GLOBAL"),
    ]
    detail = parse_stream_detail(DETAIL_30)
    assert detail is not None
    assert (detail.ptr, detail.client, detail.frontend) == (
        "0x55afc9c24b10", "127.0.0.1:41114", "fe_scimgate",
    )  # fmt: skip
    assert parse_stream_detail("\n") is None  # the pointer is gone


def test_show_table_parser_reads_use_counts() -> None:
    entries = parse_show_table(TABLE_30)
    assert [(e.key.rsplit("|", 1)[1], e.in_use) for e in entries] == [
        ("127.0.0.1:41114", 1),
        ("127.0.0.1:41115", 0),
    ]


@pytest.mark.parametrize("ptr", ["0x1;show", "0x1 2", "55aa", "0xZZ", "0x" + "1" * 17, ""])
def test_stream_pointers_are_checked_before_the_wire(ptr: str) -> None:
    streams = WorkerStreams(RuntimeAddress("unix", path="/nonexistent"), 1)
    with pytest.raises(UnsafeRuntimeArgument):
        streams.stream(ptr)
