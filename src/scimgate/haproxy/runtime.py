"""HAProxy Runtime API client: one persistent, pipelined, fail-closed CLI connection.

Facts this code relies on (HAProxy 2.6.12, measured: research/haproxy-limits.md):

- The CLI has no quoting. A raw ``;`` or LF starts a new command, a space or TAB splits a
  word (silently storing the wrong key), any line ending in ``<<`` switches to payload mode,
  and a key starting with ``#0x`` addresses another entry. So nothing reaches the wire that
  has not passed :class:`EntryValidator`, whose final check is a fixed set of harmless
  characters that a caller-supplied pattern can narrow but never widen.
- Interactive (``prompt``) mode: every reply ends with ``\\n> ``; payload lines are
  acknowledged with ``+ `` prompts. A successful ``add``/``set``/``del``/``commit`` replies
  with nothing; errors are text. With ``set severity-output number`` errors start ``[3]:``.
- An over-long request (``add map ... <<`` over ``tune.bufsize`` = 16384) is dropped with
  the connection closed and **no** reply: EOF is a failure, never an empty success.
- ``set map`` does not create, ``add map`` never checks duplicates, ``del map`` removes all
  duplicates. Upsert = ``set``, then ``add`` only on ``entry not found.``.
- A connection opened before a reload keeps talking to the *old* worker; the caller
  compares :attr:`RuntimeClient.worker_pid` with :meth:`RuntimeClient.show_proc_master`
  and calls :meth:`RuntimeClient.reconnect`.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import re
import select
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any, Literal, NewType

# --------------------------------------------------------------------------- validation

#: Our keys: HMAC-SHA256 of the normalised identity, uppercase hex.
KEY_RE = re.compile(r"[0-9A-F]{64}")
#: Our values: comma-wrapped policy-group slugs; ``,`` for an active user in no group; ``-``
#: (the overlay map's tombstone: "no entry", denied like an absent key).
VALUE_RE = re.compile(r"-|,(?:[a-z0-9_-]+,)*")
#: Map identifiers as written in the config: absolute file paths, no funny characters.
MAP_PATH_RE = re.compile(r"/[A-Za-z0-9_./-]+")

#: Whatever pattern a caller supplies, a word sent to the CLI is made only of these
#: characters: none of them is special to the 2.6 CLI tokenizer (no space, TAB, ``;``,
#: ``\\``, ``<``, ``#``, CR, LF, NUL, quotes, nothing outside ASCII).
_SAFE_WORD_RE = re.compile(r"[A-Za-z0-9_.,@+:/-]+")
_MAX_WORD = 4096
_SAFE_PAYLOAD_RE = re.compile(rb"(?:[A-Za-z0-9_.,@+:/-]+ [A-Za-z0-9_.,@+:/-]+\n)+")
_SAFE_LINE_RE = re.compile(rb"[A-Za-z0-9_.,@+:/-]+(?: [A-Za-z0-9_.,@+:/-]+)*\n")

#: A word that passed validation; only these are ever joined into a command.
Word = NewType("Word", str)


class HAProxyRuntimeError(Exception):
    """Base class of everything this client raises."""


class UnsafeRuntimeArgument(HAProxyRuntimeError, ValueError):
    """A key, value, map path or raw command failed validation; nothing was sent."""


class RuntimeUnavailable(HAProxyRuntimeError):
    """The Runtime API socket cannot be reached (HAProxy down, wrong path, refused)."""


class RuntimeConnectionLost(RuntimeUnavailable):
    """The connection broke (EOF, reset, timeout) while commands were in flight.

    ``completed`` replies were received; the outcome of the others is unknown, so the
    caller must re-read state (or resync) rather than blindly resend a write.
    """

    def __init__(self, message: str, completed: int = 0) -> None:
        super().__init__(message)
        self.completed = completed


class RuntimeCommandError(HAProxyRuntimeError):
    """HAProxy answered a command with an error or an unexpected reply."""

    def __init__(self, command: str, reply: str, message: str = "") -> None:
        self.command = command
        self.reply = reply
        super().__init__(message or f"{command!r} failed: {reply.strip()[:500]!r}")


def _safe_word(text: object, what: str) -> Word:
    if not isinstance(text, str):
        raise UnsafeRuntimeArgument(f"{what} must be a str, got {type(text).__name__}")
    if not text or len(text) > _MAX_WORD or not _SAFE_WORD_RE.fullmatch(text):
        raise UnsafeRuntimeArgument(f"{what} contains characters outside the CLI-safe set")
    return Word(text)


@dataclass(frozen=True)
class EntryValidator:
    """Allow-lists for map keys, values and paths (``fullmatch``, so no trailing-LF slip)."""

    key_re: re.Pattern[str] = KEY_RE
    value_re: re.Pattern[str] = VALUE_RE
    map_path_re: re.Pattern[str] = MAP_PATH_RE

    def key(self, key: object) -> Word:
        if not isinstance(key, str) or not self.key_re.fullmatch(key):
            raise UnsafeRuntimeArgument(f"map key rejected by {self.key_re.pattern!r}")
        return _safe_word(key, "map key")

    def value(self, value: object) -> Word:
        if not isinstance(value, str) or not self.value_re.fullmatch(value):
            raise UnsafeRuntimeArgument(f"map value rejected by {self.value_re.pattern!r}")
        return _safe_word(value, "map value")

    def map_path(self, path: object) -> Word:
        if (
            not isinstance(path, str)
            or not self.map_path_re.fullmatch(path)
            or not path.startswith("/")
            or "/../" in f"{path}/"
        ):
            raise UnsafeRuntimeArgument("map path must be an absolute path of [A-Za-z0-9_./-]")
        return _safe_word(path, "map path")

    def entries(self, entries: Mapping[str, str]) -> list[tuple[Word, Word]]:
        """Validate a whole mapping up front, so a batch is all-or-nothing on the wire."""
        return [(self.key(k), self.value(v)) for k, v in entries.items()]


DEFAULT_VALIDATOR = EntryValidator()

# ---- bulk validation (resync of up to millions of entries): the same allow-lists as
# EntryValidator.key/value + _safe_word, checked with C-speed passes instead of per-entry calls.

_HEX_UPPER = b"0123456789ABCDEF"
#: Every byte a payload body may contain: the CLI-safe word characters, the one space between
#: key and value, and the LF that ends each line.
_SAFE_BODY_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.,@+:/- \n"


def keys_valid(keys: Collection[object], validator: EntryValidator = DEFAULT_VALIDATOR) -> bool:
    """True if every key passes ``validator.key`` (allow-list and CLI-safe word), checked in
    bulk. With the default ``[0-9A-F]{64}`` pattern: every key a str of length 64 whose
    characters, joined, are all uppercase hex (one ``translate`` over all of them)."""
    if not keys:
        return True
    if set(map(type, keys)) != {str}:
        return False
    strs: Collection[str] = keys  # type: ignore[assignment]
    if validator.key_re is KEY_RE:
        if set(map(len, strs)) != {64}:
            return False
        try:
            joined = "".join(strs).encode("ascii")
        except UnicodeEncodeError:
            return False
        return not joined.translate(None, _HEX_UPPER)
    if not all(map(validator.key_re.fullmatch, strs)):
        return False
    if min(map(len, strs)) < 1 or max(map(len, strs)) > _MAX_WORD:
        return False
    return all(map(_SAFE_WORD_RE.fullmatch, strs))


def values_valid(values: Iterable[object], validator: EntryValidator = DEFAULT_VALIDATOR) -> bool:
    """True if every value passes ``validator.value``; each distinct value is checked once
    (values are group sets: few distinct ones however many entries)."""
    for value in set(values):
        try:
            validator.value(value)
        except UnsafeRuntimeArgument:
            return False
    return True


def _check_body(body: bytes, count: int) -> None:
    """Defence in depth over a whole payload body, independent of how it was built: exactly
    ``count`` lines, each ``<safe word> <safe word>\n``. Nothing outside the CLI-safe set
    (so no ``;``, ``\\``, ``<``, ``#``, TAB, CR, NUL), exactly one space and one LF per line,
    no empty word; so no empty line (which would end the payload and run the rest as
    commands) and no line ending in ``<<``."""
    if count == 0:
        if body:
            raise UnsafeRuntimeArgument("payload line outside the CLI-safe set")
        return
    if (
        body.translate(None, _SAFE_BODY_BYTES)
        or body.count(b"\n") != count
        or body.count(b" ") != count
        or not body.endswith(b"\n")
        or body.startswith((b" ", b"\n"))
        or b"\n " in body
        or b" \n" in body
    ):
        raise UnsafeRuntimeArgument("payload line outside the CLI-safe set")


@dataclass(frozen=True)
class PayloadBody:
    """Validated ``key value\n`` lines of one map (only :func:`encode_payload` and
    :func:`payload_from_lines` make one)."""

    data: bytes
    count: int
    #: The allow-lists it passed: RuntimeClient.replace_maps accepts a body only if they are
    #: its own (and re-checks the CLI-safe structure before sending it).
    validator: EntryValidator = DEFAULT_VALIDATOR


def encode_payload(
    entries: Mapping[str, str], validator: EntryValidator = DEFAULT_VALIDATOR
) -> PayloadBody:
    """All entries as ``key value\n`` lines, in the mapping's order, after checking every key
    and value against the allow-lists (all-or-nothing: one bad entry rejects the lot)."""
    if not keys_valid(entries, validator):
        # Name the culprit the way the per-entry check does.
        for key in entries:
            validator.key(key)
        raise UnsafeRuntimeArgument("map key rejected")
    if not values_valid(entries.values(), validator):
        for value in entries.values():
            validator.value(value)
        raise UnsafeRuntimeArgument("map value rejected")
    text = "".join(chain.from_iterable(zip(entries, repeat(" "), entries.values(), repeat("\n"))))
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise UnsafeRuntimeArgument("map entry outside ASCII") from None
    _check_body(data, len(entries))
    return PayloadBody(data, len(entries), validator)


#: VALUE_RE over bytes, for the distinct values of a bulk body.
_VALUE_BYTES_RE = re.compile(VALUE_RE.pattern.encode("ascii"))
_KEY_PREFIX = operator.itemgetter(slice(0, 64))
_AFTER_KEY = operator.itemgetter(64)
_VALUE_PART = operator.itemgetter(slice(65, None))


def _default_lines_valid(lines: Sequence[bytes], data: bytes) -> bool:
    """Every line is ``KEY_RE SP VALUE_RE`` (and a value fits a CLI word), checked with
    C-level passes instead of a regex over every byte: each line has a space at offset
    64 and there are as many spaces as lines (so exactly one each, there); the 64 bytes
    before it, joined, are all uppercase hex; each *distinct* value after it (values are
    group sets: few) fullmatches VALUE_RE; and ``data`` (the lines joined by LF) has one
    LF per line, so no element hid a second line."""
    if not lines:
        return not data
    try:
        if set(map(_AFTER_KEY, lines)) != {0x20}:
            return False
    except IndexError:  # a line shorter than a key and its space
        return False
    if data.count(b" ") != len(lines) or data.count(b"\n") != len(lines):
        return False
    if b"".join(map(_KEY_PREFIX, lines)).translate(None, _HEX_UPPER):
        return False
    return all(
        len(value) <= _MAX_WORD and _VALUE_BYTES_RE.fullmatch(value) is not None
        for value in set(map(_VALUE_PART, lines))
    )


def payload_from_lines(
    lines: Sequence[bytes], validator: EntryValidator = DEFAULT_VALIDATOR
) -> PayloadBody:
    """A body from ``key value`` lines (without their LF), after checking every line against
    the allow-lists, all-or-nothing like :func:`encode_payload`.

    With the default allow-lists the whole body is checked in a few C-level passes
    (:func:`_default_lines_valid`) instead of a call per entry; other validators check each line's key and value with their own
    patterns. An element holding an LF is refused (it would read as two lines)."""
    data = b"\n".join(lines) + b"\n" if lines else b""
    if validator.key_re is KEY_RE and validator.value_re is VALUE_RE:
        if not _default_lines_valid(lines, data):
            raise UnsafeRuntimeArgument("payload line outside the allow-lists")
        # Stricter than _check_body's structure check, which iter_payload_chunks still
        # runs on every request before it is sent.
        return PayloadBody(data, len(lines), validator)
    for line in lines:
        key, sep, value = line.partition(b" ")
        if not sep:
            raise UnsafeRuntimeArgument("payload line without a value")
        try:
            validator.key(key.decode("ascii"))
            validator.value(value.decode("ascii"))
        except UnicodeDecodeError:
            raise UnsafeRuntimeArgument("map entry outside ASCII") from None
    _check_body(data, len(lines))
    return PayloadBody(data, len(lines), validator)


@dataclass(frozen=True)
class DeferredBody:
    """A payload body of known ``count`` that ``result()`` hands over once validated (it
    raises :class:`UnsafeRuntimeArgument` instead if validation failed)."""

    count: int
    result: Callable[[], PayloadBody]
    validator: EntryValidator = DEFAULT_VALIDATOR


class PendingBodies(Sequence[PayloadBody]):
    """Payload bodies checked piece by piece (:func:`payload_from_lines` over slices of
    lines), in order, by whoever drives them: :meth:`step` does one slice (about a
    millisecond), for a sender to call while HAProxy parses what it was sent; asking for a
    body (indexing, :meth:`wait`) finishes the work up to it. No thread of its own: the
    checks are long C calls that hold the GIL, so a checking thread would stall the sender.

    ``counts`` is known at once; a body that failed raises :class:`UnsafeRuntimeArgument`
    when asked for (no unchecked body is ever handed out). ``done`` is set once every body
    is checked (passed or failed)."""

    #: Lines per checked slice: ~35 kB of payload, a fraction of the time HAProxy takes
    #: to parse one payload request (a sender notices a reply only between steps).
    SLICE_LINES = 512

    def __init__(
        self, line_lists: Sequence[list[bytes]], validator: EntryValidator = DEFAULT_VALIDATOR
    ) -> None:
        self.counts = [len(lines) for lines in line_lists]
        self.validator = validator
        self.done = threading.Event()
        self._lines: list[list[bytes] | None] = list(line_lists)
        self._parts: list[bytes] = []  # checked slices of the current body
        self._bodies: list[PayloadBody | BaseException | None] = [None] * len(line_lists)
        self._next = 0  # the body being checked
        self._pos = 0  # its next line
        self._lock = threading.Lock()
        if not line_lists:
            self.done.set()

    def step(self) -> bool:
        """Check one slice; False once there is nothing left to check."""
        with self._lock:
            return self._step()

    def _step(self) -> bool:
        i = self._next
        if i >= len(self._bodies):
            return False
        lines = self._lines[i]
        assert lines is not None
        end = self._pos + self.SLICE_LINES
        finished: PayloadBody | BaseException | None = None
        try:
            self._parts.append(payload_from_lines(lines[self._pos : end], self.validator).data)
            if end >= len(lines):
                finished = PayloadBody(b"".join(self._parts), len(lines), self.validator)
        except UnsafeRuntimeArgument as exc:  # handed to whoever asks for this body
            finished = exc
        self._pos = end
        if finished is not None:
            self._bodies[i] = finished
            self._lines[i] = None
            self._parts = []
            self._next, self._pos = i + 1, 0
            if self._next == len(self._bodies):
                self.done.set()
        return self._next < len(self._bodies)

    def __len__(self) -> int:
        return len(self.counts)

    def _get(self, i: int) -> PayloadBody:
        with self._lock:
            while self._bodies[i] is None:
                self._step()
        body = self._bodies[i]
        if isinstance(body, BaseException):
            raise UnsafeRuntimeArgument(f"payload body {i} failed validation") from body
        assert body is not None
        return body

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._get(j) for j in range(len(self))[i]]
        return self._get(range(len(self))[i])

    def wait(self) -> list[PayloadBody]:
        """Every body (raises if any failed)."""
        return [self._get(i) for i in range(len(self))]

    def deferred(self) -> list[DeferredBody]:
        """One :class:`DeferredBody` per body, for :meth:`RuntimeClient.replace_maps`."""
        return [
            DeferredBody(count, lambda i=i: self._get(i), self.validator)  # type: ignore[misc]
            for i, count in enumerate(self.counts)
        ]


def _command(
    verb: Literal[
        "add map",
        "set map",
        "del map",
        "get map",
        "show map",
        "clear map",
        "prepare map",
        "commit map",
    ],
    *words: Word,
) -> bytes:
    # Re-check the whole line even though the types say every word was validated:
    # defence in depth, one regex per command.
    line = (" ".join((verb, *words)) + "\n").encode("ascii", "replace")
    if not _SAFE_LINE_RE.fullmatch(line) or len(line) > 3 * _MAX_WORD:
        raise UnsafeRuntimeArgument("command argument outside the CLI-safe set")
    return line


def _version_word(version: int) -> Word:
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 2**32:
        raise UnsafeRuntimeArgument("map version must be an unsigned 32-bit int")
    return Word(f"@{version}")


def check_raw_command(cmd: str) -> bytes:
    """Accept a raw command for :meth:`RuntimeClient.execute` only if it is exactly one
    command: no CR/LF/NUL, no unescaped ``;``, no trailing ``<<`` (payload mode)."""
    if not isinstance(cmd, str) or not cmd.strip():
        raise UnsafeRuntimeArgument("empty command")
    if any(c in cmd for c in "\r\n\0"):
        raise UnsafeRuntimeArgument("command contains CR, LF or NUL")
    if re.search(r"(?<!\\)(?:\\\\)*;", cmd):
        raise UnsafeRuntimeArgument("command contains an unescaped ';' (a second command)")
    if cmd.rstrip().endswith("<<"):
        raise UnsafeRuntimeArgument("command would enter payload mode ('<<')")
    if not cmd.isascii() or not cmd.isprintable():
        raise UnsafeRuntimeArgument("command contains non-printable or non-ASCII characters")
    return (cmd + "\n").encode("ascii")


# --------------------------------------------------------------------------- addresses


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


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class UpsertResult:
    updated: int
    added: int


@dataclass(frozen=True)
class ReplaceResult:
    version: int
    entries: int
    chunk_bytes: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class MapInfo:
    """One line of ``show map``: ``entry_cnt`` counts every version, staged ones too."""

    map_id: int
    path: str
    curr_ver: int
    next_ver: int
    entry_cnt: int


@dataclass(frozen=True)
class MasterProcess:
    pid: int
    kind: str
    reloads: int
    uptime: str
    version: str


@dataclass(frozen=True)
class MasterProcs:
    """Master CLI ``show proc``: the reload counter and worker PIDs reveal reloads/restarts."""

    master: MasterProcess
    failed_reloads: int
    workers: list[MasterProcess]
    old_workers: list[MasterProcess]

    @property
    def reloads(self) -> int:
        return self.master.reloads

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers]


_PROC_LINE = re.compile(
    r"^(?P<pid>\d+)\s+(?P<kind>\S+)\s+(?P<reloads>\d+)"
    r"(?:\s+\[failed:\s*(?P<failed>\d+)\])?\s+(?P<uptime>\S+)(?:\s+(?P<version>\S+))?"
)


def parse_show_proc(text: str) -> MasterProcs:
    master: MasterProcess | None = None
    failed = 0
    workers: list[MasterProcess] = []
    old: list[MasterProcess] = []
    section = "master"
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            label = stripped.lstrip("#").strip().lower()
            if label in ("workers", "old workers", "programs"):
                section = label
            continue
        m = _PROC_LINE.match(stripped)
        if not m:
            continue
        proc = MasterProcess(
            pid=int(m["pid"]),
            kind=m["kind"],
            reloads=int(m["reloads"]),
            uptime=m["uptime"],
            version=m["version"] or "",
        )
        if m["kind"] == "master":
            master, failed = proc, int(m["failed"] or 0)
        elif section == "workers":
            workers.append(proc)
        elif section == "old workers":
            old.append(proc)
    if master is None:
        raise RuntimeCommandError(
            "show proc", text, "master CLI 'show proc' reply has no master line"
        )
    return MasterProcs(master, failed, workers, old)


def master_command(address: RuntimeAddress, command: str, timeout: float = 5.0) -> str:
    """Send one command to the master CLI (non-interactive) and return the whole reply.

    ``reload`` closes the connection without a reply; that is returned as ``""``.
    """
    # The 2.6 master CLI keeps a non-interactive connection open after the reply, so the
    # command is followed by ';quit' (same line: a second line might not be read).
    data = check_raw_command(command)[:-1] + b";quit\n"
    sock = address.connect(timeout)
    try:
        sock.sendall(data)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError as exc:
                raise RuntimeConnectionLost(
                    f"master CLI {address}: timeout on {command!r}"
                ) from exc
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise RuntimeConnectionLost(f"master CLI {address}: {exc}") from exc
    finally:
        sock.close()
    return b"".join(chunks).decode("utf-8", "replace")


# --------------------------------------------------------------------------- client

#: Largest ``add map ... <<`` request (command line + payload + ending empty line) we send.
#: tune.bufsize is 16384 on 2.6; a bigger request is dropped silently with nothing applied.
MAX_PAYLOAD_BYTES = 16000

_PROMPT = b"\n> "
#: replace_maps stages about this many entries (old + new versions coexist) per round.
REPLACE_GROUP_ENTRIES = 131_072
_SMALL_WRITE = 32 * 1024
#: A streamed pipeline makes requests only while less than this many bytes wait to be sent.
_STREAM_AHEAD = 1 << 20
#: Buffers per sendmsg call (well under IOV_MAX, 1024 on Linux).
_SENDMSG_BUFFERS = 256
#: Socket buffers asked for (the kernel caps them at net.core.[wr]mem_max): a resync keeps
#: a few MB of payload queued so HAProxy never waits for us.
_SOCKET_BUFFER = 4 << 20
_SEVERITY = re.compile(r"^\[(\d)\]: ?")
_NOT_FOUND_SET = "entry not found."
_NOT_FOUND_DEL = "Key not found."


@dataclass(frozen=True)
class _Request:
    data: bytes
    payload: bool = False

    @property
    def label(self) -> str:
        return self.data.split(b"\n", 1)[0].decode("ascii", "replace")[:200]


def _message(reply: str) -> tuple[int | None, str]:
    """Split ``[3]: entry not found.`` into (3, ``entry not found.``)."""
    m = _SEVERITY.match(reply)
    if m:
        return int(m.group(1)), reply[m.end() :].strip()
    return None, reply.strip()


class RuntimeClient:
    """A persistent interactive connection to one HAProxy worker's stats socket.

    Thread-safe (one lock; a whole :meth:`replace_map` holds it). Not for the master
    socket, whose prompt differs: use :meth:`show_proc_master` / :func:`master_command`.
    """

    def __init__(
        self,
        address: RuntimeAddress | str,
        timeout: float = 5.0,
        *,
        validator: EntryValidator = DEFAULT_VALIDATOR,
        master: RuntimeAddress | str | None = None,
        cli_timeout: int | None = 3600,
    ) -> None:
        self.address = RuntimeAddress.parse(address) if isinstance(address, str) else address
        self.master = RuntimeAddress.parse(master) if isinstance(master, str) else master
        self.timeout = timeout
        self.validator = validator
        # Per-connection idle timeout ('set timeout cli', supported by 2.6); without it the
        # socket's 'stats timeout' (default 10 s) applies. Either way an idle close is
        # detected before the next send and the client reconnects.
        self.cli_timeout = cli_timeout
        self._sock: socket.socket | None = None
        self._lock = threading.RLock()
        self.worker_pid: int | None = None
        self.connects = 0
        #: Seconds per phase of the last replace_map(s) call (for benchmarks and logs).
        self.last_replace_timings: dict[str, float] = {}
        #: Replace payloads go one request per non-interactive connection (about half
        #: HAProxy's CPU per entry; see _payloads_one_shot); False streams them on the
        #: persistent prompt connection.
        self.payload_connections = True

    # ---- connection management

    def __enter__(self) -> RuntimeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        handshake = [_Request(b"prompt\n"), _Request(b"set severity-output number\n")]
        if self.cli_timeout:
            handshake.append(_Request(f"set timeout cli {int(self.cli_timeout)}\n".encode()))
        handshake.append(_Request(b"show info\n"))
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
        info = _parse_info(replies[-1])
        if "Pid" not in info:
            self.close()
            raise RuntimeCommandError("show info", replies[-1], "not a worker stats socket")
        self.worker_pid = int(info["Pid"])
        self.connects += 1
        return sock

    def _exchange(self, requests: Iterable[_Request]) -> list[str]:
        with self._lock:
            sock = self._ensure_connected()
            try:
                return self._io(sock, requests)
            except BaseException:
                # Lost, or a streamed request failed to be made mid-stream (bytes of a
                # payload may be in flight): either way this stream is unusable.
                self.close()
                raise

    def _io(self, sock: socket.socket, requests: Iterable[_Request]) -> list[str]:
        """Send the requests and return exactly one reply per request.

        A small write goes out with one blocking ``sendall`` (it fits in the socket
        buffer, so it cannot block on HAProxy's unread replies). A large pipeline (or an
        iterator, whose requests are made while earlier ones stream) interleaves writing
        and reading: HAProxy stops reading commands once its reply buffer is full, so
        write-everything-then-read would deadlock (seen with 20k adds).
        """
        sent_reqs: list[_Request] = []
        replies: list[str] = []
        buf = bytearray()
        scan_from = 0  # no prompt before this offset in buf

        def receive(chunk: bytes) -> None:
            nonlocal scan_from
            if not chunk:
                # HAProxy drops over-long lines/payloads by closing, without a word.
                raise RuntimeConnectionLost(
                    f"HAProxy closed the CLI connection during {_pending_label()!r}",
                    len(replies),
                )
            buf.extend(chunk)
            scan_from = _take_replies(buf, scan_from, sent_reqs, replies)

        def _pending_label() -> str:
            return sent_reqs[len(replies)].label if len(replies) < len(sent_reqs) else "?"

        try:
            if isinstance(requests, Sequence) and (
                sum(len(r.data) for r in requests) <= _SMALL_WRITE
            ):
                sent_reqs.extend(requests)
                sock.settimeout(self.timeout)
                sock.sendall(b"".join(r.data for r in requests))
                while len(replies) < len(sent_reqs):
                    receive(sock.recv(1 << 20))
            else:
                self._interleaved(sock, iter(requests), sent_reqs, replies, receive)
        except TimeoutError as exc:
            raise RuntimeConnectionLost(
                f"no reply from {self.address} within {self.timeout}s "
                f"(waiting for {_pending_label()!r})",
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
        source: Iterator[_Request],
        sent_reqs: list[_Request],
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
                        sent_reqs.append(req)
                        queue.append(memoryview(req.data))
                        queued += len(req.data)
                        if queued >= _STREAM_AHEAD:
                            break
                    else:
                        exhausted = True
                    # Time spent making requests is ours, not HAProxy's.
                    deadline = time.monotonic() + self.timeout
                if exhausted and not queue and len(replies) >= len(sent_reqs):
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

    # ---- raw commands

    def execute(self, cmd: str) -> str:
        """Run exactly one raw command and return its reply (severity prefix kept).

        Refuses anything that could be more than one command. Prefer the typed methods:
        they validate keys and values against the allow-lists.
        """
        return self._exchange([_Request(check_raw_command(cmd))])[0]

    def pipeline(self, cmds: Sequence[str]) -> list[str]:
        """Send many raw commands in one write; one reply per command, in order."""
        requests = [_Request(check_raw_command(c)) for c in cmds]
        return self._exchange(requests) if requests else []

    def show_info(self) -> dict[str, str]:
        reply = self._exchange([_Request(b"show info\n")])[0]
        info = _parse_info(reply)
        if "Pid" not in info:
            raise RuntimeCommandError("show info", reply)
        self.worker_pid = int(info["Pid"])
        return info

    def version(self) -> tuple[int, int, int]:
        return parse_version(self.show_info().get("Version", ""))

    def show_proc_master(self) -> MasterProcs:
        """``show proc`` on the master CLI (needs ``master=``): reload counter, workers."""
        if self.master is None:
            raise RuntimeUnavailable("no master CLI address configured (haproxy -S ...)")
        return parse_show_proc(master_command(self.master, "show proc", self.timeout))

    # ---- maps: reading

    def list_maps(self) -> list[MapInfo]:
        reply = self._exchange([_Request(b"show map\n")])[0]
        return _parse_map_list(reply)

    def map_info(self, map_path: str) -> MapInfo:
        path = self.validator.map_path(map_path)
        for info in self.list_maps():
            if info.path == path:
                return info
        raise RuntimeCommandError("show map", "", f"map {path} is not loaded by the running config")

    def show_map_entries(self, map_path: str, version: int | None = None) -> list[tuple[str, str]]:
        """Every entry in order, duplicates included (``show map [@ver] <map>``)."""
        words = [self.validator.map_path(map_path)]
        if version is not None:
            words.insert(0, _version_word(version))
        reply = self._exchange([_Request(_command("show map", *words))])[0]
        if _message(reply)[0] is not None:
            raise RuntimeCommandError("show map", reply)
        entries: list[tuple[str, str]] = []
        for line in reply.split("\n"):
            if not line:
                continue
            parts = line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("0x"):
                raise RuntimeCommandError("show map", reply, f"unparseable show map line {line!r}")
            entries.append((parts[1], parts[2] if len(parts) == 3 else ""))
        return entries

    def show_map(self, map_path: str, version: int | None = None) -> dict[str, str]:
        """The map as HAProxy sees it; with duplicates, the first one (what lookups return)."""
        result: dict[str, str] = {}
        for key, value in self.show_map_entries(map_path, version):
            result.setdefault(key, value)
        return result

    def get_map(self, map_path: str, key: str) -> str | None:
        """Lookup through HAProxy's matcher; None if not found."""
        cmd = _command("get map", self.validator.map_path(map_path), self.validator.key(key))
        reply = self._exchange([_Request(cmd)])[0]
        if "found=no" in reply:
            return None
        m = re.search(r'\bvalue="(.*)", type="', reply)
        if "found=yes" not in reply or m is None:
            raise RuntimeCommandError("get map", reply)
        return m.group(1)

    # ---- maps: single writes

    def add_map(self, map_path: str, key: str, value: str) -> None:
        """Blind add. HAProxy keeps duplicates (lookups see the first): use upsert_map."""
        cmd = _command(
            "add map",
            self.validator.map_path(map_path),
            self.validator.key(key),
            self.validator.value(value),
        )
        self._expect_empty([_Request(cmd)])

    def set_map(self, map_path: str, key: str, value: str) -> bool:
        """Update an existing key (all duplicates). False if the key is absent."""
        cmd = _command(
            "set map",
            self.validator.map_path(map_path),
            self.validator.key(key),
            self.validator.value(value),
        )
        reply = self._exchange([_Request(cmd)])[0]
        return _set_outcome(cmd.decode(), reply)

    def del_map(self, map_path: str, key: str) -> bool:
        """Delete every entry for key. False if it was not there."""
        cmd = _command("del map", self.validator.map_path(map_path), self.validator.key(key))
        reply = self._exchange([_Request(cmd)])[0]
        return _del_outcome(cmd.decode(), reply)

    def upsert_map(self, map_path: str, key: str, value: str) -> bool:
        """``set``, then ``add`` on ``entry not found.`` (never del+add, never blind add).
        Returns True if the key was added, False if updated."""
        with self._lock:
            if self.set_map(map_path, key, value):
                return False
            self.add_map(map_path, key, value)
            return True

    def clear_map(self, map_path: str, version: int | None = None) -> None:
        words = [self.validator.map_path(map_path)]
        if version is not None:
            words.insert(0, _version_word(version))
        self._expect_empty([_Request(_command("clear map", *words))])

    # ---- maps: pipelined writes

    def upsert_many(self, map_path: str, entries: Mapping[str, str]) -> UpsertResult:
        """Pipelined upsert: all ``set``s in one write, then ``add`` for the missing ones."""
        path = self.validator.map_path(map_path)
        pairs = self.validator.entries(entries)
        if not pairs:
            return UpsertResult(0, 0)
        with self._lock:
            sets = [_Request(_command("set map", path, k, v)) for k, v in pairs]
            missing: list[tuple[Word, Word]] = []
            failures: list[tuple[str, str]] = []
            for req, pair, reply in zip(sets, pairs, self._exchange(sets), strict=True):
                try:
                    if not _set_outcome(req.label, reply):
                        missing.append(pair)
                except RuntimeCommandError as exc:
                    failures.append((exc.command, exc.reply))
            if missing:
                adds = [_Request(_command("add map", path, k, v)) for k, v in missing]
                for req, reply in zip(adds, self._exchange(adds), strict=True):
                    if reply.strip():
                        failures.append((req.label, reply))
            if failures:
                raise RuntimeCommandError(
                    failures[0][0],
                    failures[0][1],
                    f"{len(failures)} upserts failed: {failures[:3]!r}",
                )
            return UpsertResult(updated=len(pairs) - len(missing), added=len(missing))

    def delete_many(self, map_path: str, keys: Iterable[str]) -> int:
        """Pipelined ``del map``; returns how many keys were present."""
        path = self.validator.map_path(map_path)
        words = [self.validator.key(k) for k in keys]
        if not words:
            return 0
        reqs = [_Request(_command("del map", path, k)) for k in words]
        deleted = 0
        failures: list[tuple[str, str]] = []
        for req, reply in zip(reqs, self._exchange(reqs), strict=True):
            try:
                deleted += _del_outcome(req.label, reply)
            except RuntimeCommandError as exc:
                failures.append((exc.command, exc.reply))
        if failures:
            raise RuntimeCommandError(
                failures[0][0], failures[0][1], f"{len(failures)} deletes failed: {failures[:3]!r}"
            )
        return deleted

    def add_many(self, map_path: str, entries: Mapping[str, str]) -> None:
        """Pipelined blind ``add map`` (only for keys known to be absent)."""
        path = self.validator.map_path(map_path)
        reqs = [
            _Request(_command("add map", path, k, v)) for k, v in self.validator.entries(entries)
        ]
        if reqs:
            self._expect_empty(reqs)

    # ---- maps: atomic replace

    def replace_map(
        self,
        map_path: str,
        entries: Mapping[str, str],
        *,
        max_chunk_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> ReplaceResult:
        """Atomically replace the whole map: ``prepare map`` → ``add map @ver <map> <<``
        chunks → check the staged count → ``commit map @ver <map>``.

        Lookups see the old content until the commit, then only the new one. Nothing is
        committed unless every chunk was acknowledged and the staged count is exact; on
        failure the staged version is cleared (best effort) and the error raised.
        Incremental writes to this map must not run concurrently (they would be lost at
        commit); the client lock serialises writers that share this client.
        """
        return self.replace_maps([(map_path, entries)], max_chunk_bytes=max_chunk_bytes)[0]

    def replace_maps(
        self,
        maps: Sequence[tuple[str, Mapping[str, str] | PayloadBody | DeferredBody]],
        *,
        max_chunk_bytes: int = MAX_PAYLOAD_BYTES,
        group_entries: int = REPLACE_GROUP_ENTRIES,
        before_commit: Callable[[], None] | None = None,
        background: Callable[[], bool] | None = None,
    ) -> list[ReplaceResult]:
        """:meth:`replace_map` for several maps, pipelined: maps are taken in groups of
        about ``group_entries`` staged entries (bounding the memory that old and new
        versions hold together); per group one round trip prepares every map, one streams
        every payload chunk and reads the staged counts, one commits. Each map flips at its
        own commit; a group commits only if all its maps staged exactly. Every entry of
        a map is validated before any of it is sent (a :class:`PayloadBody` from
        :func:`encode_payload` was, with this client's validator; a :class:`DeferredBody`
        is when it is taken). ``before_commit`` runs once, before the first commit (e.g.
        to finish writing the map files). ``background`` is work to do in small steps
        while HAProxy parses a payload request (returns False when none is left), e.g.
        :meth:`PendingBodies.step`.
        """
        if not 64 <= max_chunk_bytes <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"max_chunk_bytes must be within 64..{MAX_PAYLOAD_BYTES}")
        timings = dict.fromkeys(
            ("validate", "prepare", "chunk", "send", "before_commit", "commit"), 0.0
        )
        self.last_replace_timings = timings
        t = time.perf_counter()
        bodies = [
            (self.validator.map_path(path), self._payload_body(entries)) for path, entries in maps
        ]
        timings["validate"] = time.perf_counter() - t
        groups: list[list[tuple[Word, PayloadBody | DeferredBody]]] = []
        size = 0
        for item in bodies:
            if not groups or (groups[-1] and size + item[1].count > group_entries):
                groups.append([])
                size = 0
            groups[-1].append(item)
            size += item[1].count
        results: list[ReplaceResult] = []
        pending_hook = before_commit
        with self._lock:
            for group in groups:
                results += self._replace_group(
                    group, max_chunk_bytes, timings, pending_hook, background
                )
                pending_hook = None
        return results

    def _payload_body(
        self, entries: Mapping[str, str] | PayloadBody | DeferredBody
    ) -> PayloadBody | DeferredBody:
        if isinstance(entries, PayloadBody | DeferredBody):
            if entries.validator is not self.validator and entries.validator != self.validator:
                raise UnsafeRuntimeArgument("payload body validated with other allow-lists")
            return entries
        return encode_payload(entries, self.validator)

    def _replace_group(
        self,
        group: Sequence[tuple[Word, PayloadBody | DeferredBody]],
        max_chunk_bytes: int,
        timings: dict[str, float],
        before_commit: Callable[[], None] | None,
        background: Callable[[], bool] | None = None,
    ) -> list[ReplaceResult]:
        t = time.perf_counter()
        reqs = [_Request(b"show map\n")]
        reqs += [_Request(_command("prepare map", path)) for path, _ in group]
        replies = self._exchange(reqs)
        counts = {m.path: m.entry_cnt for m in _parse_map_list(replies[0])}
        versions: list[int] = []
        prepared: list[tuple[Word, int]] = []
        chunk_sizes: list[list[int]] = [[] for _ in group]
        try:
            for (path, _), reply in zip(group, replies[1:], strict=True):
                m = re.fullmatch(r"New version created: (\d+)", _message(reply)[1])
                if m is None:
                    raise RuntimeCommandError(f"prepare map {path}", reply)
                versions.append(int(m.group(1)))
                prepared.append((path, versions[-1]))
            missing = [path for path, _ in group if path not in counts]
            if missing:
                raise RuntimeCommandError(
                    "show map", replies[0], f"map {missing[0]} is not loaded by the running config"
                )
            timings["prepare"] += time.perf_counter() - t
            t = time.perf_counter()

            def stream() -> Iterator[_Request]:
                # Made while the previous chunks stream: a deferred body is awaited (and
                # chunked) only when HAProxy is already busy with what came before it.
                for i, ((path, item), version) in enumerate(zip(group, versions, strict=True)):
                    started = time.perf_counter()
                    body = item.result() if isinstance(item, DeferredBody) else item
                    if body.count != item.count:
                        raise UnsafeRuntimeArgument("payload body count changed")
                    timings["chunk"] += time.perf_counter() - started
                    for c in iter_payload_chunks(version, path, body, max_chunk_bytes):
                        chunk_sizes[i].append(len(c))
                        yield _Request(c, payload=True)

            sent: list[_Request] = []

            def recorded() -> Iterator[_Request]:
                for req in stream():
                    sent.append(req)
                    yield req

            if self.payload_connections:
                replies = self._payloads_one_shot(recorded(), background)
                replies += self._exchange([_Request(b"show map\n")])
            else:
                replies = self._exchange(itertools.chain(recorded(), [_Request(b"show map\n")]))
            for req, r in zip(sent, replies, strict=False):
                if r.strip():
                    raise RuntimeCommandError(req.label, r)
            after = {m.path: m.entry_cnt for m in _parse_map_list(replies[-1])}
            for (path, item), version in zip(group, versions, strict=True):
                staged = after.get(path, 0) - counts[path]
                if staged != item.count:
                    raise RuntimeCommandError(
                        f"add map @{version} {path}",
                        "",
                        f"staged {staged} entries in version {version}, expected {item.count}",
                    )
            timings["send"] += time.perf_counter() - t
            if before_commit is not None:
                t = time.perf_counter()
                before_commit()
                timings["before_commit"] = time.perf_counter() - t
        except BaseException:
            for path, version in prepared:
                self._discard_version(path, version)
            raise
        t = time.perf_counter()
        self._expect_empty(
            [
                _Request(_command("commit map", _version_word(version), path))
                for (path, _), version in zip(group, versions, strict=True)
            ]
        )
        timings["commit"] += time.perf_counter() - t
        return [
            ReplaceResult(version, item.count, sizes)
            for (_, item), version, sizes in zip(group, versions, chunk_sizes, strict=True)
        ]

    def _payloads_one_shot(
        self, requests: Iterable[_Request], background: Callable[[], bool] | None = None
    ) -> list[str]:
        """Send each payload request on its own non-interactive connection, one after the
        other; returns each one's reply (empty = accepted).

        Why not the prompt connection: in prompt mode HAProxy 2.6 answers every payload
        line with a ``+ `` prompt, which about doubles its CPU per entry (measured: 300k
        entries, 1.9-2.4 s of worker CPU in prompt mode, 0.8-1.1 s non-interactive). The
        next connection is opened while HAProxy parses the current request, so connecting
        costs no HAProxy time; requests run one at a time (two at once cost more worker
        CPU on this 2-thread config: both threads contend for the maps).

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

    def _discard_version(self, path: Word, version: int) -> None:
        # Best effort: the next prepare/commit purges an abandoned version anyway.
        with contextlib.suppress(HAProxyRuntimeError):
            self.clear_map(path, version)

    # ---- helpers

    def _expect_empty(self, reqs: Sequence[_Request]) -> None:
        failures = [
            (req.label, reply)
            for req, reply in zip(reqs, self._exchange(reqs), strict=True)
            if reply.strip()
        ]
        if failures:
            raise RuntimeCommandError(
                failures[0][0],
                failures[0][1],
                f"{len(failures)} of {len(reqs)} commands failed, first: "
                f"{failures[0][0]!r} -> {failures[0][1].strip()[:200]!r}",
            )


def _payload_header(version: int, map_path: Word) -> bytes:
    return (
        " ".join(("add map", _version_word(version), _safe_word(map_path, "map path"), "<<")) + "\n"
    ).encode("ascii")


def chunk_payload(
    version: int, map_path: Word, body: PayloadBody, max_bytes: int = MAX_PAYLOAD_BYTES
) -> list[bytes]:
    """``add map @<ver> <map> <<`` requests over a validated body, cut at line ends, each
    (header + lines + ending empty line) at most max_bytes."""
    return list(iter_payload_chunks(version, map_path, body, max_bytes))


def iter_payload_chunks(
    version: int, map_path: Word, body: PayloadBody, max_bytes: int = MAX_PAYLOAD_BYTES
) -> Iterator[bytes]:
    """:func:`chunk_payload`, one request at a time (made while the previous one is being
    parsed). Each request's lines pass the CLI-safe structure check before it is yielded,
    and the lines of all of them must add up to the body's count: the same defence in
    depth as checking the whole body up front, however the body was made."""
    header = _payload_header(version, map_path)
    data = body.data
    room = max_bytes - len(header) - 1  # the empty line that ends the payload
    pos, end_all, lines = 0, len(data), 0
    while pos < end_all:
        end = end_all if end_all - pos <= room else data.rfind(b"\n", pos, pos + room) + 1
        if end <= pos:
            raise UnsafeRuntimeArgument("a single map entry does not fit in one payload request")
        part = data[pos:end]
        count = part.count(b"\n")
        _check_body(part, count)
        lines += count
        if lines > body.count:
            break
        yield b"".join((header, part, b"\n"))
        pos = end
    if lines != body.count:
        raise UnsafeRuntimeArgument("payload line count differs from the body's")


def build_payload_chunks(
    version: int,
    map_path: Word,
    pairs: Sequence[tuple[Word, Word]],
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> list[bytes]:
    """``add map @<ver> <map> <<`` requests, each (header + lines + ending empty line)
    at most max_bytes. Lines are ``key value``; a key is never empty, so no line is."""
    try:
        data = "".join(f"{k} {v}\n" for k, v in pairs).encode("ascii")
    except UnicodeEncodeError:
        raise UnsafeRuntimeArgument("payload line outside the CLI-safe set") from None
    return chunk_payload(version, map_path, PayloadBody(data, len(pairs)), max_bytes)


_PLUS_PROMPTS = re.compile(rb"(?:\+ )*")


def _take_replies(
    buf: bytearray, scan_from: int, requests: Sequence[_Request], replies: list[str]
) -> int:
    """Move every complete reply from the front of buf into replies (in place).

    A reply ends at ``\\n> ``; its text is everything before (one trailing newline
    dropped). Payload requests are preceded by one ``+ `` prompt per line received.
    Returns the offset from which the next search for a prompt must start.
    """
    pos = 0
    n = len(requests)
    while len(replies) < n:
        if requests[len(replies)].payload:
            m = _PLUS_PROMPTS.match(buf, pos)
            pos = m.end() if m else pos
            if len(buf) - pos < 2:
                break
            scan_from = max(scan_from, pos)
        idx = buf.find(_PROMPT, max(pos, scan_from))
        if idx < 0:
            scan_from = max(pos, len(buf) - len(_PROMPT) + 1)
            break
        if idx == pos:
            replies.append("")
        else:
            text = buf[pos:idx].decode("utf-8", "replace")
            replies.append(text[:-1] if text.endswith("\n") else text)
        pos = idx + len(_PROMPT)
    if pos:
        del buf[:pos]
    return max(0, scan_from - pos)


def _set_outcome(cmd: str, reply: str) -> bool:
    if not reply.strip():
        return True
    if _message(reply)[1] == _NOT_FOUND_SET:
        return False
    raise RuntimeCommandError(cmd.strip(), reply)


def _del_outcome(cmd: str, reply: str) -> bool:
    if not reply.strip():
        return True
    if _message(reply)[1] == _NOT_FOUND_DEL:
        return False
    raise RuntimeCommandError(cmd.strip(), reply)


def _parse_info(text: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


_MAP_LIST_LINE = re.compile(
    r"^(?P<id>-?\d+) \((?P<path>[^)]*)\).*?curr_ver=(?P<curr>\d+) next_ver=(?P<next>\d+)"
    r" entry_cnt=(?P<cnt>\d+)"
)


def _parse_map_list(text: str) -> list[MapInfo]:
    out = []
    for line in text.splitlines():
        m = _MAP_LIST_LINE.match(line)
        if m:
            out.append(
                MapInfo(int(m["id"]), m["path"], int(m["curr"]), int(m["next"]), int(m["cnt"]))
            )
    return out


def parse_version(text: str) -> tuple[int, int, int]:
    """``2.6.12-1+deb12u4`` → (2, 6, 12); ``3.0-dev1`` → (3, 0, 0)."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        raise ValueError(f"no HAProxy version in {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
