"""A long download behind HAProxy: a loopback HTTP server that streams its answer slowly
(one small chunk every ``interval``, for at most ``max_seconds``), and a raw client that
reads it through HAProxy and times how long until the connection ends."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    interval = 0.05
    max_seconds = 60.0  # bounded: a download nobody cuts ends by itself

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + self.max_seconds
        try:
            while time.monotonic() < deadline:
                self.wfile.write(b"1\r\nx\r\n")
                self.wfile.flush()
                time.sleep(self.interval)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client (HAProxy) went away: the cut
            pass
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def slow_download_server(port: int) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="slow-download", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class Download:
    """A GET through HAProxy whose body keeps coming: open, check it flows, time its end."""

    def __init__(self, host: str, port: int, path: str, token: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        self.status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0

    def flows(self, timeout: float = 3.0) -> bool:
        """Body bytes keep arriving (the download is alive)."""
        self.sock.settimeout(timeout)
        try:
            return bool(self.sock.recv(4096))
        except OSError:
            return False

    def seconds_until_closed(self, timeout: float) -> float | None:
        """Seconds until the connection ends (EOF or reset), None if bytes still flow after
        ``timeout``."""
        start = time.monotonic()
        while (left := timeout - (time.monotonic() - start)) > 0:
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(65536):
                    return time.monotonic() - start
            except TimeoutError:
                return None
            except OSError:
                return time.monotonic() - start
        return None

    def close(self) -> None:
        self.sock.close()
