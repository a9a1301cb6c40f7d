"""Streams of one HAProxy worker: read the live-session table and ``show sess``, and shut
one stream by its pointer, through the master CLI (``@!<pid>``), old workers included.

Facts this relies on (HAProxy 2.6.12 and 3.0.11, measured here; research round2/
03-kill-sessions.md):

- ``show sess`` prints one line per stream: ``<ptr>: proto=.. src=<ip>:<port> fe=<name>
  be=..`` (same short format on both versions; 3.0 accepts filters we do not need).
- ``show sess <ptr>`` prints that stream in detail, first line ``<ptr>: [<date>] id=<n>
  proto=.. source=<ip>:<port>``, then ``  frontend=<name> (id=..``; an unknown pointer
  prints nothing about a stream.
- ``shutdown session <ptr>`` ends that stream (logged with termination flag ``K``) and
  answers an empty line; HAProxy looks the pointer up among live streams first, so a
  stale pointer shuts nothing.
- ``show table <t>`` prints ``<entry>: key=<key> use=<n> exp=<ms> ...`` (3.0 adds
  ``shard=<n>``); ``use`` counts the streams tracking the entry now.

A pointer can be reused by a new stream between ``show sess`` and ``shutdown session``,
so :func:`shut_if_still` re-reads the stream and shuts it only if it is still the
connection we mean (same client address, same frontend).

Does: build these commands from validated words only, send them to one worker, parse.
Does not: decide whose streams to shut (``sync.sessions``), or know what a tracked key means
(the caller parses it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.errors import UnsafeRuntimeArgument
from scimgate.haproxy.master import master_command, worker_command
from scimgate.haproxy.runtime import RuntimeClient

STREAM_PTR_RE = re.compile(r"0x[0-9a-f]{1,16}")
TABLE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_SESS_LINE = re.compile(
    r"^(?P<ptr>0x[0-9a-f]{1,16}): proto=\S+ src=(?P<src>\S+) fe=(?P<fe>\S+) be=(?P<be>\S+)"
)
_DETAIL_FIRST = re.compile(
    r"^(?P<ptr>0x[0-9a-f]{1,16}): \[[^\]]*\] id=\d+ proto=\S+ source=(?P<src>\S+)"
)
_DETAIL_FRONTEND = re.compile(r"^\s+frontend=(?P<fe>\S+) \(id=")
_TABLE_LINE = re.compile(r"^0x[0-9a-f]+: key=(?P<key>\S+) use=(?P<use>\d+) ")


@dataclass(frozen=True)
class Stream:
    ptr: str
    client: str  # ip:port as HAProxy prints it
    frontend: str


@dataclass(frozen=True)
class TableEntry:
    key: str
    in_use: int


def _ptr(ptr: str) -> str:
    if not isinstance(ptr, str) or not STREAM_PTR_RE.fullmatch(ptr):
        raise UnsafeRuntimeArgument("a stream pointer is 0x and 1-16 lower-case hex digits")
    return ptr


def _table(name: str) -> str:
    if not isinstance(name, str) or not TABLE_NAME_RE.fullmatch(name):
        raise UnsafeRuntimeArgument("invalid stick table name")
    return name


def parse_show_sess(text: str) -> list[Stream]:
    out = []
    for line in text.splitlines():
        m = _SESS_LINE.match(line)
        if m:
            out.append(Stream(m["ptr"], m["src"], m["fe"]))
    return out


def parse_stream_detail(text: str) -> Stream | None:
    """``show sess <ptr>``'s reply: the stream, or None when HAProxy no longer has it."""
    first = frontend = None
    for line in text.splitlines():
        if first is None:
            first = _DETAIL_FIRST.match(line)
            continue
        frontend = _DETAIL_FRONTEND.match(line)
        if frontend:
            break
    if first is None or frontend is None:
        return None
    return Stream(first["ptr"], first["src"], frontend["fe"])


def parse_show_table(text: str) -> list[TableEntry]:
    out = []
    for line in text.splitlines():
        m = _TABLE_LINE.match(line)
        if m:
            out.append(TableEntry(m["key"], int(m["use"])))
    return out


class WorkerStreams:
    """One worker's streams, reached through the master CLI (``@!<pid>``): the current
    worker and old workers alike, which a connection to the stats socket cannot do. With
    ``pid`` None, ``address`` is a worker's own stats socket."""

    def __init__(
        self,
        address: RuntimeAddress,
        pid: int | None,
        timeout: float = 2.0,
        *,
        direct: RuntimeClient | None = None,
    ) -> None:
        self.address = address
        self.pid = pid
        self.timeout = timeout
        # A persistent connection that reaches this very worker (its stats socket): no
        # master hop and no new connection per command on the common path.
        self.direct = direct

    def _run(self, command: str) -> str:
        if self.direct is not None:
            return self.direct.execute(command)
        line = command if self.pid is None else worker_command(self.pid, command)
        # master_command: one non-interactive command (``;quit`` appended), whole reply.
        return master_command(self.address, line, self.timeout)

    def table(self, name: str) -> list[TableEntry]:
        return parse_show_table(self._run(f"show table {_table(name)}"))

    def streams(self) -> list[Stream]:
        return parse_show_sess(self._run("show sess"))

    def stream(self, ptr: str) -> Stream | None:
        return parse_stream_detail(self._run(f"show sess {_ptr(ptr)}"))

    def shut_if_still(self, expected: Stream) -> bool:
        """Shut ``expected.ptr`` only if that pointer is still a stream of the same client
        address on the same frontend (re-read just before); True when shut."""
        now = self.stream(expected.ptr)
        if now is None or now.client != expected.client or now.frontend != expected.frontend:
            return False
        self._run(f"shutdown session {_ptr(expected.ptr)}")
        return True
