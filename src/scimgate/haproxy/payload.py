"""Payload encoding: validated ``key value`` bodies, and their ``add map @ver <map> <<``
requests cut to fit ``tune.bufsize``.

Facts this relies on (HAProxy 2.6.12, measured: docs/haproxy-facts.md §2a, §6):

- Each ``add map ... <<`` request (command line + payload + the empty line that ends it)
  must fit in ``tune.bufsize`` (16384 on 2.6; the largest accepted was 16,366 bytes). A
  bigger one is dropped with the connection closed and **no** reply, nothing applied.
- An empty line ends a payload: anything after it runs as commands. So no body line is
  ever empty, and every line is exactly ``<word> <word>``.

A body is checked as a whole (:func:`encode_payload`, :func:`payload_from_lines`) and each
request is checked again before it is yielded (:func:`iter_payload_chunks`): defence in
depth, however the body was made.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

from scimgate.haproxy.errors import UnsafeRuntimeArgument
from scimgate.haproxy.words import (
    DEFAULT_VALIDATOR,
    HEX_UPPER,
    MAX_WORD,
    WORD_RE,
    EntryValidator,
    Word,
    safe_word,
    version_word,
)

#: Largest ``add map ... <<`` request (command line + payload + ending empty line) we send.
#: tune.bufsize is 16384 on 2.6; a bigger request is dropped silently with nothing applied.
MAX_PAYLOAD_BYTES = 16000

#: Every byte a payload body may contain: the CLI-safe word characters, the one space between
#: key and value, and the LF that ends each line.
_SAFE_BODY_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.,@+:/- \n"


def check_body(body: bytes, count: int) -> None:
    """Defence in depth over a whole payload body, independent of how it was built: exactly
    ``count`` lines, each ``<safe word> <safe word>\\n``. Nothing outside the CLI-safe set
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
    """Validated ``key value\\n`` lines of one map (only :func:`encode_payload` and
    :func:`payload_from_lines` make one)."""

    data: bytes
    count: int
    #: The allow-lists it passed: a client accepts a body only if they are its own (and
    #: re-checks the CLI-safe structure before sending it).
    validator: EntryValidator = DEFAULT_VALIDATOR


def encode_payload(
    entries: Mapping[str, str], validator: EntryValidator = DEFAULT_VALIDATOR
) -> PayloadBody:
    """All entries as ``key value\\n`` lines, in the mapping's order, after checking every key
    and value against the allow-lists (all-or-nothing: one bad entry rejects the lot)."""
    if not validator.keys_valid(entries):
        # Name the culprit the way the per-entry check does.
        for key in entries:
            validator.key(key)
        raise UnsafeRuntimeArgument("map key rejected")
    if not validator.values_valid(entries.values()):
        for value in entries.values():
            validator.value(value)
        raise UnsafeRuntimeArgument("map value rejected")
    text = "".join(chain.from_iterable(zip(entries, repeat(" "), entries.values(), repeat("\n"))))
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise UnsafeRuntimeArgument("map entry outside ASCII") from None
    check_body(data, len(entries))
    return PayloadBody(data, len(entries), validator)


def _hex_lines_valid(
    lines: Sequence[bytes], data: bytes, width: int, validator: EntryValidator
) -> bool:
    """Every line is ``<width hex digits> SP <value>``, checked with C-level passes instead of
    a regex over every byte: each line has a space at offset ``width`` and there are as many
    spaces as lines (so exactly one each, there); the key bytes, joined, are all uppercase
    hex; each *distinct* value (values are group sets: few) passes ``validator.value``; and
    ``data`` (the lines joined by LF) has one LF per line, so no element hid a second line."""
    if not lines:
        return not data
    after_key = operator.itemgetter(width)
    try:
        if set(map(after_key, lines)) != {0x20}:
            return False
    except IndexError:  # a line shorter than a key and its space
        return False
    if data.count(b" ") != len(lines) or data.count(b"\n") != len(lines):
        return False
    if b"".join(map(operator.itemgetter(slice(0, width)), lines)).translate(None, HEX_UPPER):
        return False
    for value in set(map(operator.itemgetter(slice(width + 1, None)), lines)):
        try:
            validator.value(value.decode("ascii"))
        except (UnicodeDecodeError, UnsafeRuntimeArgument):
            return False
    return True


def payload_from_lines(
    lines: Sequence[bytes], validator: EntryValidator = DEFAULT_VALIDATOR
) -> PayloadBody:
    """A body from ``key value`` lines (without their LF), after checking every line against
    the allow-lists, all-or-nothing like :func:`encode_payload`.

    With fixed-width hex keys (``validator.hex_width``) the whole body is checked in a few
    C-level passes (:func:`_hex_lines_valid`) instead of a call per entry; other validators
    check each line's key and value with their own patterns. An element holding an LF is
    refused (it would read as two lines)."""
    data = b"\n".join(lines) + b"\n" if lines else b""
    # The default allow-lists are the CLI-safe set itself: the structure check is the whole
    # check, once no line is long enough to hold an over-long word.
    if (
        validator.key_re is WORD_RE
        and validator.value_re is WORD_RE
        and max(map(len, lines), default=0) <= MAX_WORD
    ):
        check_body(data, len(lines))
        return PayloadBody(data, len(lines), validator)
    width = validator.hex_width
    if width is not None:
        if not _hex_lines_valid(lines, data, width, validator):
            raise UnsafeRuntimeArgument("payload line outside the allow-lists")
        # Stricter than check_body's structure check, which iter_payload_chunks still
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
    check_body(data, len(lines))
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
        # _lock: the checking cursor (_lines, _parts, _bodies, _next, _pos); a leaf lock.
        self._lock = threading.Lock()
        self._lines: list[list[bytes] | None] = list(line_lists)
        self._parts: list[bytes] = []  # checked slices of the current body
        self._bodies: list[PayloadBody | BaseException | None] = [None] * len(line_lists)
        self._next = 0  # the body being checked
        self._pos = 0  # its next line
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
        """One :class:`DeferredBody` per body, for a client's ``replace_maps``."""
        return [
            DeferredBody(count, lambda i=i: self._get(i), self.validator)  # type: ignore[misc]
            for i, count in enumerate(self.counts)
        ]


def payload_header(version: int, map_path: Word) -> bytes:
    """``add map @<version> <map> <<`` and its LF."""
    words = ("add map", version_word(version), safe_word(map_path, "map path"), "<<")
    return (" ".join(words) + "\n").encode("ascii")


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
    header = payload_header(version, map_path)
    data = body.data
    room = max_bytes - len(header) - 1  # the empty line that ends the payload
    pos, end_all, lines = 0, len(data), 0
    while pos < end_all:
        end = end_all if end_all - pos <= room else data.rfind(b"\n", pos, pos + room) + 1
        if end <= pos:
            raise UnsafeRuntimeArgument("a single map entry does not fit in one payload request")
        part = data[pos:end]
        count = part.count(b"\n")
        check_body(part, count)
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
