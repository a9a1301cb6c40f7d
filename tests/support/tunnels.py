"""WebSocket tunnels through HAProxy, as a browser or a CLI opens them: open one with a
bearer token, check it still echoes, and time how long it takes HAProxy to close it."""

from __future__ import annotations

import time

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect


def open_ws(url: str, token: str, timeout: float = 5.0) -> ClientConnection:
    """A WebSocket opened through HAProxy with ``Authorization: Bearer <token>``; it has
    echoed once (the tunnel is established end to end)."""
    ws = connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        open_timeout=timeout,
        ping_interval=None,  # an idle tunnel: no frame of ours may be what closes it
        close_timeout=1,
    ).__enter__()  # the caller closes it (websockets >= 17.1 warns unless entered)
    assert echoes(ws), "a fresh tunnel did not echo"
    return ws


def refused_status(url: str, token: str) -> int | None:
    """The HTTP status HAProxy answers the upgrade with, or None when it was accepted."""
    try:
        ws = connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                     compression=None, open_timeout=5)  # fmt: skip
    except InvalidStatus as exc:
        return int(exc.response.status_code)
    with ws:
        return None


def echoes(ws: ClientConnection, timeout: float = 3.0) -> bool:
    """The tunnel is open: a message comes back."""
    try:
        ws.send("ping")
        return ws.recv(timeout=timeout) == "ping"
    except (ConnectionClosed, TimeoutError, OSError):
        return False


def seconds_until_closed(ws: ClientConnection, timeout: float) -> float | None:
    """Seconds until the peer closes the (idle) tunnel, or None if it is still open after
    ``timeout``."""
    start = time.monotonic()
    try:
        ws.recv(timeout=timeout)
    except ConnectionClosed:
        return time.monotonic() - start
    except TimeoutError:
        return None
    # A message nobody sent: the tunnel is not what we think; report it as open.
    return None
