"""Connection and pipelined I/O: one persistent interactive CLI connection to one HAProxy
worker, and the one-request-per-connection form used for bulk payloads.

Facts this relies on (HAProxy 2.6.12, measured: docs/haproxy-facts.md §1, §2a):

- Pipelining works on a ``prompt`` connection: newline-separated commands run one after the
  other, one reply each. HAProxy stops reading commands once its reply buffer is full, so a
  large pipeline must read while it writes (write-everything-then-read deadlocked at 20k
  adds).
- An over-long request is dropped with the connection closed and **no** reply: EOF is a
  failure, never an empty success.
- A connection opened before a reload keeps talking to the *old* worker; the handshake's
  ``show info`` tells which worker a connection reaches (:attr:`CliConnection.worker_pid`).
- In prompt mode 2.6 answers ``+ `` to every payload line, about doubling its CPU per entry
  (300k entries: 1.9-2.4 s of worker CPU in prompt mode, 0.8-1.1 s non-interactive;
  ``bench/resync.py`` measures the whole resync), hence :meth:`CliConnection.one_shot`.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Self

from scimgate.haproxy.errors import (
    RuntimeCommandError,
    RuntimeConnectionLost,
    RuntimeUnavailable,
)
from scimgate.haproxy.replies import parse_info, take_replies

_SMALL_WRITE = 32 * 1024
_SMALL_READ = 64 * 1024  # below malloc's mmap threshold
#: A streamed pipeline makes requests only while less than this many bytes wait to be sent.
_STREAM_AHEAD = 1 << 20
#: Buffers per sendmsg call (well under IOV_MAX, 1024 on Linux).
_SENDMSG_BUFFERS = 256
#: Socket buffers asked for (the kernel caps them at net.core.[wr]mem_max): a resync keeps
#: a few MB of payload queued so HAProxy never waits for us.
_SOCKET_BUFFER = 4 << 20


@dataclass(frozen=True)
class RuntimeAddress:
    """Where a CLI listens: a unix socket path, or a TCP host and port."""

    family: Literal["unix", "tcp"]
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> RuntimeAddress:
        """``unix:/run/admin.sock``, ``unix@/run/admin.sock``, ``/run/admin.sock``,
        ``tcp:127.0.0.1:9999``, ``ipv4@127.0.0.1:9999``, ``tcp:[::1]:9999``."""
        for prefix in ("unix:", "unix@"):
            if text.startswith(prefix):
                text = text[len(prefix) :]
                break
        else:
            for prefix in ("tcp:", "ipv4@", "ipv6@"):
                if text.startswith(prefix):
                    host, sep, port = text[len(prefix) :].rpartition(":")
                    host = host.strip("[]")
                    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                        raise ValueError(f"bad TCP runtime address {text!r}")
                    return cls("tcp", host=host, port=int(port))
        if not text.startswith("/"):
            raise ValueError(f"runtime address must be unix:/abs/path or tcp:host:port: {text!r}")
        return cls("unix", path=text)

    def connect(self, timeout: float) -> socket.socket:
        try:
            if self.family == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(self.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((self.host, self.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise RuntimeUnavailable(f"cannot connect to HAProxy CLI at {self}: {exc}") from exc
        return sock

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.family == "unix" else f"tcp:{self.host}:{self.port}"


@dataclass(frozen=True)
class Request:
    """One request's bytes (a command line, or a payload request) as they go on the wire."""

    data: bytes
    payload: bool = False

    @property
    def label(self) -> str:
        return self.data.split(b"\n", 1)[0].decode("ascii", "replace")[:200]


class CliConnection:
    """A persistent interactive connection to one HAProxy worker's stats socket.

    Thread-safe: one lock serialises exchanges (:meth:`session` holds it across several).
    Reconnects by itself when the peer closed an idle connection; :attr:`worker_pid` says
    which worker the current connection reaches. Not for the master socket, whose prompt
    differs (``master.master_command``)."""

    def __init__(
        self,
        address: RuntimeAddress | str,
        timeout: float = 5.0,
        *,
        cli_timeout: int | None = 3600,
    ) -> None:
        self.address = RuntimeAddress.parse(address) if isinstance(address, str) else address
        self.timeout = timeout
        # Per-connection idle timeout ('set timeout cli', supported by 2.6); without it the
        # socket's 'stats timeout' (default 10 s) applies. Either way an idle close is
        # detected before the next send and the client reconnects.
        self.cli_timeout = cli_timeout
        # _lock: the socket and the request/reply stream on it (re-entrant: a session holds
        # it across exchanges); the only lock of this class.
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self.worker_pid: int | None = None
        self.connects = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold the connection across several exchanges (nobody else's request between)."""
        with self._lock:
            yield

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.close()
                finally:
                    self._sock = None

    def reconnect(self) -> None:
        """Drop the connection and open a new one (e.g. after a reload: the old one
        still talks to the old worker)."""
        with self._lock:
            self.close()
            self._ensure_connected()

    def _alive(self, sock: socket.socket) -> bool:
        """False if the peer closed (idle timeout, restart) or left stray bytes."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable  # EOF or unexpected data: either way the stream is unusable

    def _ensure_connected(self) -> socket.socket:
        if self._sock is not None and self._alive(self._sock):
            return self._sock
        self.close()
        sock = self.address.connect(self.timeout)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):  # a hint: the kernel caps or ignores it
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        self._sock = sock
        handshake = [Request(b"prompt\n"), Request(b"set severity-output number\n")]
        if self.cli_timeout:
            handshake.append(Request(f"set timeout cli {int(self.cli_timeout)}\n".encode()))
        handshake.append(Request(b"show info\n"))
        try:
            replies = self._io(sock, handshake)
        except RuntimeConnectionLost as exc:
            self.close()
            raise RuntimeUnavailable(
                f"HAProxy CLI at {self.address} closed during handshake"
            ) from exc
        for req, reply in zip(handshake[:-1], replies[:-1], strict=True):
            if reply.strip():
                self.close()
                raise RuntimeCommandError(req.label, reply, f"handshake {req.label!r}: {reply!r}")
        info = parse_info(replies[-1])
        if "Pid" not in info:
            self.close()
            raise RuntimeCommandError("show info", replies[-1], "not a worker stats socket")
        self.worker_pid = int(info["Pid"])
        self.connects += 1
        return sock

    def exchange(self, requests: Iterable[Request]) -> list[str]:
        """Send the requests (pipelined) and return exactly one reply per request."""
        with self._lock:
            sock = self._ensure_connected()
            try:
                return self._io(sock, requests)
            except BaseException:
                # Lost, or a streamed request failed to be made mid-stream (bytes of a
                # payload may be in flight): either way this stream is unusable.
                self.close()
                raise

    def expect_empty(self, reqs: Sequence[Request]) -> None:
        """Exchange requests whose success is an empty reply; raise naming the first failure."""
        failures = [
            (req.label, reply)
            for req, reply in zip(reqs, self.exchange(reqs), strict=True)
            if reply.strip()
        ]
        if failures:
            raise RuntimeCommandError(
                failures[0][0],
                failures[0][1],
                f"{len(failures)} of {len(reqs)} commands failed, first: "
                f"{failures[0][0]!r} -> {failures[0][1].strip()[:200]!r}",
            )

    def _io(self, sock: socket.socket, requests: Iterable[Request]) -> list[str]:
        """Send the requests and return exactly one reply per request.

        A small write goes out with one blocking ``sendall`` (it fits in the socket
        buffer, so it cannot block on HAProxy's unread replies). A large pipeline (or an
        iterator, whose requests are made while earlier ones stream) interleaves writing
        and reading: HAProxy stops reading commands once its reply buffer is full, so
        write-everything-then-read would deadlock (seen with 20k adds).
        """
        sent_reqs: list[Request] = []
        sent_payload: list[bool] = []
        replies: list[str] = []
        buf = bytearray()
        scan_from = 0  # no prompt before this offset in buf

        def pending_label() -> str:
            return sent_reqs[len(replies)].label if len(replies) < len(sent_reqs) else "?"

        def receive(chunk: bytes) -> None:
            nonlocal scan_from
            if not chunk:
                # HAProxy drops over-long lines/payloads by closing, without a word.
                raise RuntimeConnectionLost(
                    f"HAProxy closed the CLI connection during {pending_label()!r}",
                    len(replies),
                )
            buf.extend(chunk)
            scan_from = take_replies(buf, scan_from, sent_payload, replies)

        def sent(req: Request) -> None:
            sent_reqs.append(req)
            sent_payload.append(req.payload)

        try:
            if isinstance(requests, Sequence) and (
                sum(len(r.data) for r in requests) <= _SMALL_WRITE
            ):
                for req in requests:
                    sent(req)
                if sock.gettimeout() != self.timeout:
                    sock.settimeout(self.timeout)  # two fcntl calls: only when it changed
                sock.sendall(b"".join(r.data for r in requests))
                while len(replies) < len(sent_reqs):
                    # Small replies: a 1 MiB buffer would be an mmap/mremap/munmap per call.
                    receive(sock.recv(_SMALL_READ))
            else:
                self._interleaved(
                    sock, iter(requests), sent, lambda: len(sent_reqs), replies, receive
                )
        except TimeoutError as exc:
            raise RuntimeConnectionLost(
                f"no reply from {self.address} within {self.timeout}s "
                f"(waiting for {pending_label()!r})",
                len(replies),
            ) from exc
        except OSError as exc:
            raise RuntimeConnectionLost(f"CLI I/O failed: {exc}", len(replies)) from exc
        if buf:
            raise RuntimeConnectionLost("stray bytes after the last reply", len(replies))
        return replies

    def _interleaved(
        self,
        sock: socket.socket,
        source: Iterator[Request],
        sent: Callable[[Request], None],
        sent_count: Callable[[], int],
        replies: list[str],
        receive: Callable[[bytes], None],
    ) -> None:
        """Stream requests from ``source`` (pulled only while less than _STREAM_AHEAD bytes
        wait to be sent, so a lazily built payload overlaps with HAProxy parsing the
        previous one) with ``sendmsg`` over the buffers themselves (no joined copy), and
        read replies as they come."""
        queue: deque[memoryview] = deque()
        queued = 0
        exhausted = False
        sock.setblocking(False)
        sel = selectors.DefaultSelector()
        try:
            registered = selectors.EVENT_READ | selectors.EVENT_WRITE
            sel.register(sock, registered)
            deadline = time.monotonic() + self.timeout
            while True:
                if not exhausted and queued < _STREAM_AHEAD:
                    for req in source:
                        sent(req)
                        queue.append(memoryview(req.data))
                        queued += len(req.data)
                        if queued >= _STREAM_AHEAD:
                            break
                    else:
                        exhausted = True
                    # Time spent making requests is ours, not HAProxy's.
                    deadline = time.monotonic() + self.timeout
                if exhausted and not queue and len(replies) >= sent_count():
                    return
                wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if queue else 0)
                if wanted != registered:
                    sel.modify(sock, wanted)
                    registered = wanted
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                for _key, mask in sel.select(remaining):
                    if mask & selectors.EVENT_WRITE and queue:
                        try:
                            n = sock.sendmsg(list(itertools.islice(queue, _SENDMSG_BUFFERS)))
                        except BlockingIOError:
                            n = 0
                        if n:
                            deadline = time.monotonic() + self.timeout
                            queued -= n
                            while n:
                                head = queue[0]
                                if len(head) <= n:
                                    n -= len(head)
                                    queue.popleft()
                                else:
                                    queue[0] = head[n:]
                                    n = 0
                    if mask & selectors.EVENT_READ:
                        try:
                            chunk = sock.recv(1 << 20)
                        except BlockingIOError:
                            continue
                        deadline = time.monotonic() + self.timeout
                        receive(chunk)
        finally:
            sel.close()
            if sock.fileno() >= 0:
                sock.settimeout(self.timeout)

    def one_shot(
        self, requests: Iterable[Request], background: Callable[[], bool] | None = None
    ) -> list[str]:
        """Send each (payload) request on its own non-interactive connection, one after the
        other; returns each one's reply (empty = accepted).

        Why not the prompt connection: prompt mode's ``+ `` per payload line (module
        docstring). The next connection is opened while HAProxy parses the current request,
        so connecting costs no HAProxy time; requests run one at a time (two at once cost
        more worker CPU on this 2-thread config: both threads contend for the maps).

        A non-interactive connection ends with EOF either way, so a dropped request looks
        like an accepted one here: the caller must check the staged entry counts (through
        the persistent connection, which also proves the worker: a request that reached
        another worker after a reload is missing from this one's count).

        While HAProxy parses a request, ``background`` steps run until its reply is ready."""
        replies: list[str] = []
        more_work = background is not None
        current: socket.socket | None = None
        upcoming: socket.socket | None = None
        source = iter(requests)
        following = next(source, None)
        try:
            while following is not None:
                req = following
                current = upcoming if upcoming is not None else self.address.connect(self.timeout)
                upcoming = None
                try:
                    current.settimeout(self.timeout)
                    current.sendall(req.data)
                    # While HAProxy parses: the next connection, the next request, then
                    # background steps until this reply is ready.
                    upcoming = self.address.connect(self.timeout)
                    following = next(source, None)
                    if more_work:
                        assert background is not None
                        poller = select.poll()
                        poller.register(current, select.POLLIN)
                        while more_work and not poller.poll(0):
                            more_work = background()
                    parts: list[bytes] = []
                    while chunk := current.recv(65536):
                        parts.append(chunk)
                except TimeoutError as exc:
                    raise RuntimeConnectionLost(
                        f"no reply from {self.address} within {self.timeout}s "
                        f"(waiting for {req.label!r})",
                        len(replies),
                    ) from exc
                except OSError as exc:
                    raise RuntimeConnectionLost(
                        f"CLI I/O failed during {req.label!r}: {exc}", len(replies)
                    ) from exc
                finally:
                    current.close()
                    current = None
                replies.append(b"".join(parts).decode("utf-8", "replace"))
        finally:
            if upcoming is not None:
                upcoming.close()
        return replies
