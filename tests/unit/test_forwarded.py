"""Client address and scheme from forwarded headers: only trusted peers count, and the
client is the right-most address of the chain that is not a trusted proxy."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from hypothesis import given, settings, strategies as st

from scimgate.api.forwarded import (
    TrustedProxies,
    client_address,
    forwarded_scheme,
    parse_address,
    parse_networks,
)

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8::/32"])


def test_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert (
        client_address("127.0.0.1", ["6.6.6.6"], peer_trusted=False, networks=PROXIES)
        == "127.0.0.1"
    )


def test_right_most_untrusted_hop_wins() -> None:
    # client forged "1.1.1.1"; the edge proxy appended the real peer 203.0.113.7; an inner
    # proxy (10.0.0.5) appended the edge's address.
    chain = ["1.1.1.1, 203.0.113.7", "10.0.0.5"]
    assert client_address("10.0.0.9", chain, peer_trusted=True, networks=PROXIES) == "203.0.113.7"


def test_all_trusted_gives_the_left_most_and_no_header_gives_the_peer() -> None:
    assert client_address("10.0.0.9", ["10.1.1.1"], peer_trusted=True, networks=PROXIES) == (
        "10.1.1.1"
    )
    assert client_address("10.0.0.9", [], peer_trusted=True, networks=PROXIES) == "10.0.0.9"
    assert client_address(None, [], peer_trusted=True, networks=PROXIES) is None


def test_garbage_hop_stops_at_the_last_known_address() -> None:
    assert (
        client_address("10.0.0.9", ["6.6.6.6, unknown"], peer_trusted=True, networks=PROXIES)
        == "10.0.0.9"
    )


def test_addresses_with_ports_brackets_and_mapped_v4() -> None:
    assert str(parse_address("192.0.2.1:8443")) == "192.0.2.1"
    assert str(parse_address("[2001:db8::1]:443")) == "2001:db8::1"
    assert str(parse_address(" 2001:db8::1 ")) == "2001:db8::1"
    assert str(parse_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert parse_address("unknown") is None
    assert parse_address("_hidden") is None


def test_scheme_is_the_nearest_proxys_and_only_http_or_https() -> None:
    assert forwarded_scheme(["http, https"]) == "https"
    assert forwarded_scheme(["HTTPS"]) == "https"
    assert forwarded_scheme(["javascript"]) is None
    assert forwarded_scheme([]) is None


ipv4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(ipv4, max_size=6), ipv4)
def test_the_client_is_never_a_trusted_proxy_unless_all_are(hops: list[str], peer: str) -> None:
    networks = parse_networks(["10.0.0.0/8"])
    # the peer is a trusted proxy (it came in on HAProxy's socket): only hops can be the client
    got = client_address(peer, [", ".join(hops)], peer_trusted=True, networks=networks)
    untrusted = [h for h in hops if ipaddress.ip_address(h) not in networks[0]]
    # the right-most untrusted hop, else the left-most address of the chain
    assert got == (untrusted[-1] if untrusted else [*hops, peer][0])


def _scope(client: tuple[str, int] | None, server: Any, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "client": client,
        "server": server,
        "scheme": "http",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


def _seen(middleware: TrustedProxies, scope: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(s: Any, receive: Any, send: Any) -> None:
        seen.update(s)

    middleware.app = app
    asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    return seen


def test_middleware_trusts_the_unix_socket_only() -> None:
    mw = TrustedProxies(None, trusted_proxies=[], trusted_sockets=["/run/scimgate.sock"])  # type: ignore[arg-type]
    headers = {"x-forwarded-for": "6.6.6.6, 198.51.100.4", "x-forwarded-proto": "https"}
    via_haproxy = _seen(mw, _scope(None, ("/run/scimgate.sock", None), headers))
    assert via_haproxy["client"] == ("198.51.100.4", 0)
    assert via_haproxy["scheme"] == "https"
    local = _seen(mw, _scope(("127.0.0.1", 5555), ("127.0.0.1", 8000), headers))
    assert local["client"] == ("127.0.0.1", 5555)
    assert local["scheme"] == "http"
    other_socket = _seen(mw, _scope(None, ("/tmp/other.sock", None), headers))
    assert other_socket["client"] is None and other_socket["scheme"] == "http"


def test_middleware_trusts_configured_proxies_by_address() -> None:
    mw = TrustedProxies(None, trusted_proxies=["127.0.0.0/8"], trusted_sockets=[])  # type: ignore[arg-type]
    headers = {"x-forwarded-for": "203.0.113.7, 127.0.0.9"}
    seen = _seen(mw, _scope(("127.0.0.1", 5555), ("127.0.0.1", 8000), headers))
    assert seen["client"] == ("203.0.113.7", 0)
