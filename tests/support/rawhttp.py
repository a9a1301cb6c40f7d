"""HTTP/1.x requests written byte for byte on a loopback socket.

HTTP client libraries normalise what they send (they percent-encode ``\\``, refuse a second
Host, rewrite absolute-form targets); these helpers send exactly the request line and
headers given, from a chosen loopback source address, and read to the end of the connection.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    def echoed(self) -> dict[str, list[str]]:
        """An echo backend's view (JSON ``headers``: pairs): lower-case name -> every value."""
        seen: dict[str, list[str]] = {}
        for name, value in json.loads(self.body)["headers"]:
            seen.setdefault(name.lower(), []).append(value)
        return seen


def send(
    port: int,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    host: str | None = "app.example.com",
    source: str = "127.0.0.1",
    version: str = "HTTP/1.1",
) -> Reply:
    """``GET target`` to 127.0.0.1:port from ``source``, encoded latin-1 as given."""
    lines = [f"GET {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("Connection: close")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    reply_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        reply_headers[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), reply_headers, body.decode("latin-1"))
