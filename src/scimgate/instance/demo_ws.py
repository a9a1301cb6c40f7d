"""The demo WebSocket echo backend of `scimgate up` (the ``/ws`` route of the demo policy).

Does: serve WebSocket echo on a loopback port in a daemon thread of the `up` process, so
``make demo`` can open a tunnel through HAProxy and show it being cut when the user is
deprovisioned; find that port in a policy (the backend ``demo_ws_echo``).
Does not: authenticate anyone (HAProxy does, before the upgrade reaches it), or serve
anything but echo; it is not part of a production deployment.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from scimgate.policy.model import Policy

DEMO_WS_BACKEND = "demo_ws_echo"


def demo_ws_address(policy: Policy) -> tuple[str, int] | None:
    """The loopback address of the demo echo backend the policy routes to, if any."""
    for route in policy.routes:
        if route.to.backend == DEMO_WS_BACKEND and route.to.servers:
            host, _, port = route.to.servers[0].rpartition(":")
            if host in ("127.0.0.1", "localhost"):
                return "127.0.0.1", int(port)
    return None


def _echo(connection: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        for message in connection:
            connection.send(message)


@contextlib.contextmanager
def running_echo(address: tuple[str, int] | None) -> Iterator[Server | None]:
    """The echo server on ``address`` for the duration of the block (nothing when None)."""
    if address is None:
        yield None
        return
    # No compression, no keepalive pings: the tunnel stays quiet unless the client talks,
    # which is the case a live-session cut must handle (an idle tunnel re-runs no rule).
    server = serve(_echo, address[0], address[1], compression=None, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever, name="demo-ws-echo", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(5)
