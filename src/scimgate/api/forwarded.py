"""Who sent a request, when proxies stand in between: ``X-Forwarded-For`` and
``X-Forwarded-Proto`` count only when the peer is a trusted proxy.

Does: decide whether the connection's peer is trusted (it came in on a unix socket only
HAProxy can open, or its address is in ``trusted_proxies``), take the client address from the
forwarded chain (the right-most address that is not a trusted proxy) and the scheme from the
nearest proxy's ``X-Forwarded-Proto``; an ASGI middleware puts both into the scope, so the
audit ``client`` and SCIM ``meta.location`` URLs follow from them.
Does not: trust anything by default (uvicorn's own proxy-header handling trusts 127.0.0.1, so
any local process could forge its audit address: it is turned off), read ``Forwarded``,
``X-Real-IP`` or ``X-Forwarded-Host`` (the host is the ``Host`` header HAProxy passes through).

The chain: a proxy appends the address it saw to ``X-Forwarded-For``; everything to the left of
the first trusted proxy's entry came from the client and may be forged. Walking from the right
and stopping at the first address that is not a trusted proxy gives the one address the
client could not choose.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https"})


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDR strings (validated by the config) as networks."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def parse_address(text: str) -> IPAddress | None:
    """An address from a forwarded hop or a peer: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``,
    ``[::1]``, ``[::1]:443`` (some proxies add the port); IPv4-mapped IPv6 as IPv4. None for
    anything else (``unknown``, an obfuscated RFC 7239 identifier, garbage)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: IPAddress | None, networks: Sequence[IPNetwork]) -> bool:
    return address is not None and any(address in network for network in networks)


def forwarded_hops(values: Iterable[str]) -> list[str]:
    """Every hop of every ``X-Forwarded-For`` line, left to right (repeated header lines are
    one list, RFC 9110 §5.3)."""
    return [hop.strip() for value in values for hop in value.split(",") if hop.strip()]


def client_address(
    peer: str | None,
    forwarded_for: Sequence[str],
    *,
    peer_trusted: bool,
    networks: Sequence[IPNetwork],
) -> str | None:
    """The client's address: the peer itself unless it is a trusted proxy; else the right-most
    hop of ``forwarded_for`` that is not a trusted proxy (all trusted: the left-most). A hop
    that is not an address stops the walk at the last address known to have connected."""
    if not peer_trusted:
        return peer
    known = peer
    for hop in reversed(forwarded_hops(forwarded_for)):
        address = parse_address(hop)
        if address is None:
            return known
        known = str(address)
        if not is_trusted(address, networks):
            return known
    return known


def forwarded_scheme(values: Sequence[str]) -> str | None:
    """The scheme the nearest proxy was reached with: the right-most ``X-Forwarded-Proto``
    value, if it is http or https."""
    hops = forwarded_hops(values)
    if not hops:
        return None
    scheme = hops[-1].lower()
    return scheme if scheme in SCHEMES else None


def _header_values(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name]


class TrustedProxies:
    """ASGI middleware: the scope's ``client`` and ``scheme`` as the trusted proxies report
    them; from any other peer, the connection's own values (its forwarded headers ignored)."""

    def __init__(
        self, app: ASGIApp, *, trusted_proxies: Iterable[str], trusted_sockets: Iterable[str]
    ) -> None:
        self.app = app
        self.networks = parse_networks(trusted_proxies)
        # uvicorn reports a unix socket connection as server = (socket path, None).
        self.sockets = frozenset(trusted_sockets)

    def peer_trusted(self, scope: Scope) -> bool:
        server: Any = scope.get("server")
        if server is not None and server[1] is None and server[0] in self.sockets:
            return True
        client: Any = scope.get("client")
        return client is not None and is_trusted(parse_address(str(client[0])), self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.peer_trusted(scope):
            client: Any = scope.get("client")
            peer = str(client[0]) if client else None
            address = client_address(
                peer,
                _header_values(scope, b"x-forwarded-for"),
                peer_trusted=True,
                networks=self.networks,
            )
            if address is not None and address != peer:
                scope["client"] = (address, 0)
            scheme = forwarded_scheme(_header_values(scope, b"x-forwarded-proto"))
            if scheme is not None:
                scope["scheme"] = (
                    scheme if scope["type"] == "http" else scheme.replace("http", "ws")
                )
        await self.app(scope, receive, send)
