"""The connections under the ASGI app: where scimgate listens, and how long a client may take.

Does: bind the listening sockets (the direct TCP port on loopback, HAProxy's unix socket);
give every request a deadline for its request line and headers and one for its body; bound
the open connections on TCP listeners (the unix socket's one peer, HAProxy, bounds its own
with the server line's ``maxconn``).
Does not: parse HTTP (uvicorn's httptools protocol does, this is a subclass of it), know
SCIM, or decide who the client is (``forwarded``).

Why: uvicorn has no header timeout. Its keep-alive timer runs only between requests, so a
client that sends one header line every few seconds, or nothing at all after connecting,
holds its connection for ever (issue 8: 200 such connections were all still open after
150 s). Here a timer is armed when a connection opens and when a request begins, and
cancelled when the headers are complete; a second one covers the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scimgate.scim.errors import ERROR_SCHEMA

log = logging.getLogger("scimgate.http")

BACKLOG = 2048
UNIX_SOCKET_MODE = 0o660  # this user and its group: HAProxy runs as one of them


class ListenError(RuntimeError):
    """A listening socket cannot be opened (port taken, socket path in use)."""


@dataclass
class ClientLimits:
    """How long a client may take, and how many TCP connections may be open at once."""

    header_timeout: float
    body_timeout: float
    max_connections: int
    # Open TCP connections. Owned by the event loop's thread (protocol callbacks only).
    open_tcp: int = 0


def _close_response(status: int, reason: str, detail: str) -> bytes:
    # RFC 7644 §3.12 error body, so a SCIM client sees what happened.
    body = json.dumps({"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail})
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/scim+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}"
    ).encode()


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request deadlines and a connection bound. Use
    :func:`protocol_for` to get a subclass bound to one :class:`ClientLimits`."""

    limits: ClassVar[ClientLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._request_begun = False
        self._counted = False

    # --- connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            if self.limits.open_tcp >= self.limits.max_connections:
                log.warning(
                    "connection refused: %d connections open (max_connections)",
                    self.limits.open_tcp,
                    extra={"client": self.client[0] if self.client else None},
                )
                transport.write(
                    _close_response(503, "Service Unavailable", "too many open connections")
                )
                transport.close()
                return
            self.limits.open_tcp += 1
            self._counted = True
        # The first request's headers are due this long after the connection opened.
        self._arm(self.limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self.limits.open_tcp -= 1
        super().connection_lost(exc)

    # --- request (httptools parser callbacks) ------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self._deadline is None:  # a later request on a kept-alive connection
            self._arm(self.limits.header_timeout, self._headers_late)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.limits.body_timeout, self._body_late)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._request_begun = False
        self._disarm()

    # --- deadlines ---------------------------------------------------------------------

    def _arm(self, seconds: float, expired: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._request_begun:
            log.info(
                "closed a connection: request headers not complete within %.1f s",
                self.limits.header_timeout,
                extra={"client": self.client[0] if self.client else None},
            )
            self.transport.write(
                _close_response(408, "Request Timeout", "request headers not received in time")
            )
        self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            # The app has not consumed what arrived (it is busy): not the client's delay.
            self._arm(self.limits.body_timeout, self._body_late)
            return
        log.info(
            "closed a connection: request body not complete within %.1f s",
            self.limits.body_timeout,
            extra={"client": self.client[0] if self.client else None},
        )
        if self.cycle is not None and not self.cycle.response_started:
            self.transport.write(
                _close_response(408, "Request Timeout", "request body not received in time")
            )
        self.transport.close()


def protocol_for(limits: ClientLimits) -> type[DeadlineProtocol]:
    """The protocol class to pass as ``http=`` to ``uvicorn.Config``, bound to ``limits``."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"limits": limits})


# ---------------------------------------------------------------------------------------------
# Listening sockets


def listen_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def _in_use(path: Path) -> bool:
    """A process accepts connections on the unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True


@dataclass
class UnixListener:
    """A listening unix socket and the file it made (removed on close if still ours)."""

    path: Path
    sock: socket.socket
    inode: int

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(OSError):
            if self.path.lstat().st_ino == self.inode:  # not replaced by a later run
                self.path.unlink()


def listen_unix(path: Path, mode: int = UNIX_SOCKET_MODE) -> UnixListener:
    """A unix listening socket at ``path`` with ``mode``. A stale socket (a killed run's) is
    replaced; a live one, or any other kind of file, is an error."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ListenError(f"{path} exists and is not a unix socket")
        if _in_use(path):
            raise ListenError(f"{path}: another process is listening on this unix socket")
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Created with no access for others from the first moment (bind honours the umask); this
    # runs at start-up, before any other thread exists.
    previous = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(previous)
    os.chmod(path, mode)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return UnixListener(path, sock, path.lstat().st_ino)
