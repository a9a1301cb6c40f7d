"""A WebSocket over HTTP/2 (RFC 8441 extended CONNECT) through HAProxy, from a raw socket:
the client speaks HTTP/2 with prior knowledge (HAProxy detects the preface on a clear-text
bind), opens one stream with ``:method CONNECT``, ``:protocol websocket`` and a path, and
exchanges WebSocket frames (RFC 6455) in DATA frames on that stream. HAProxy turns it into
an HTTP/1.1 upgrade to the backend."""

from __future__ import annotations

import os
import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings


class H2WebSocket:
    def __init__(self, host: str, port: int, path: str, token: str, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self._flush()
        self.connect_protocol = False
        self.closed = False
        self.buffer = b""
        deadline = time.monotonic() + timeout
        while not self.connect_protocol and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())
        self.stream = self.conn.get_next_available_stream_id()
        self.status = 0
        self.conn.send_headers(self.stream, [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"),
            (":path", path), (":authority", f"{host}:{port}"),
            ("authorization", f"Bearer {token}"), ("sec-websocket-version", "13"),
        ])  # fmt: skip
        self._flush()
        while not self.status and not self.closed and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _pump(self, timeout: float) -> None:
        """Read once from the socket (up to ``timeout``) and handle what came."""
        self.sock.settimeout(max(0.01, timeout))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                # RFC 8441 §3: the server allows extended CONNECT with this setting
                changed = event.changed_settings.get(
                    h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
                )
                if changed is not None and changed.new_value == 1:
                    self.connect_protocol = True
            elif isinstance(event, h2.events.ResponseReceived):
                self.status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.buffer += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamReset, h2.events.StreamEnded,
                                    h2.events.ConnectionTerminated)):  # fmt: skip
                self.closed = True
        self._flush()

    def echoes(self, timeout: float = 3.0) -> bool:
        """A masked text frame "ping" (RFC 6455 §5.2) comes back unmasked."""
        if self.closed:
            return False
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"ping"))
        self.buffer = b""
        try:
            self.conn.send_data(self.stream, b"\x81" + struct.pack("B", 0x80 | 4) + mask + payload)
            self._flush()
        except Exception:
            return False
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            if self.buffer.endswith(b"\x81\x04ping"):
                return True
            self._pump(deadline - time.monotonic())
        return self.buffer.endswith(b"\x81\x04ping")

    def seconds_until_closed(self, timeout: float) -> float | None:
        start = time.monotonic()
        while not self.closed and time.monotonic() - start < timeout:
            self._pump(timeout - (time.monotonic() - start))
        return time.monotonic() - start if self.closed else None

    def close(self) -> None:
        self.sock.close()
