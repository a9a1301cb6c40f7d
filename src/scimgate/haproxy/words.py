"""The Runtime API's grammar: which words may go on the wire, checked once, fail-closed.

Facts this relies on (HAProxy 2.6.12, measured: docs/haproxy-facts.md §6):

- The CLI has no quoting. A raw ``;`` or LF starts a new command, a space or TAB splits a
  word (silently storing the wrong key), any line ending in ``<<`` switches to payload mode,
  and a key starting with ``#0x`` addresses another entry.

So a command is only ever built from :data:`Word` values, each of which passed
:func:`safe_word`: a fixed set of characters none of which is special to the 2.6 tokenizer.
A caller's pattern (:class:`EntryValidator`) narrows that set, never widens it. This module
knows no policy: what a key or a value of *our* maps looks like is the caller's pattern (the
sync engine hands in policy/'s grammar); the defaults accept any CLI-safe word.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NewType

from scimgate.haproxy.errors import UnsafeRuntimeArgument

#: Whatever pattern a caller supplies, a word sent to the CLI is made only of these
#: characters: none of them is special to the 2.6 CLI tokenizer (no space, TAB, ``;``,
#: ``\\``, ``<``, ``#``, CR, LF, NUL, quotes, nothing outside ASCII).
WORD_RE = re.compile(r"[A-Za-z0-9_.,@+:/-]+")
#: Longest word we send (a command line must fit HAProxy's buffer with room to spare).
MAX_WORD = 4096
#: Map identifiers as written in the config: absolute file paths, no funny characters.
MAP_PATH_RE = re.compile(r"/[A-Za-z0-9_./-]+")
#: The bytes of an uppercase hex key (the bulk checks' alphabet).
HEX_UPPER = b"0123456789ABCDEF"
_HEX_KEY_PATTERN = re.compile(r"\[0-9A-F\]\{([1-9][0-9]*)\}")
_SAFE_LINE_RE = re.compile(rb"[A-Za-z0-9_.,@+:/-]+(?: [A-Za-z0-9_.,@+:/-]+)*\n")

#: A word that passed validation; only these are ever joined into a command.
Word = NewType("Word", str)


def safe_word(text: object, what: str) -> Word:
    """``text`` as a :data:`Word` if it is a non-empty CLI-safe str of at most MAX_WORD."""
    if not isinstance(text, str):
        raise UnsafeRuntimeArgument(f"{what} must be a str, got {type(text).__name__}")
    if not text or len(text) > MAX_WORD or not WORD_RE.fullmatch(text):
        raise UnsafeRuntimeArgument(f"{what} contains characters outside the CLI-safe set")
    return Word(text)


def hex_key_width(pattern: re.Pattern[str]) -> int | None:
    """N when ``pattern`` is exactly ``[0-9A-F]{N}`` (fixed-width uppercase hex keys, with no
    flags): the bulk checks then run as C-level passes instead of a regex per key."""
    m = _HEX_KEY_PATTERN.fullmatch(pattern.pattern)
    if m is None or pattern.flags & ~re.UNICODE:
        return None
    return int(m.group(1))


@dataclass(frozen=True)
class EntryValidator:
    """Allow-lists for map keys, values and paths (``fullmatch``, so no trailing-LF slip),
    always inside the CLI-safe set. The caller that knows what its maps hold narrows them."""

    key_re: re.Pattern[str] = WORD_RE
    value_re: re.Pattern[str] = WORD_RE
    map_path_re: re.Pattern[str] = MAP_PATH_RE

    @cached_property
    def hex_width(self) -> int | None:
        """The key width when keys are fixed-width uppercase hex (see :func:`hex_key_width`)."""
        return hex_key_width(self.key_re)

    def key(self, key: object) -> Word:
        if not isinstance(key, str) or not self.key_re.fullmatch(key):
            raise UnsafeRuntimeArgument(f"map key rejected by {self.key_re.pattern!r}")
        return safe_word(key, "map key")

    def value(self, value: object) -> Word:
        if not isinstance(value, str) or not self.value_re.fullmatch(value):
            raise UnsafeRuntimeArgument(f"map value rejected by {self.value_re.pattern!r}")
        return safe_word(value, "map value")

    def map_path(self, path: object) -> Word:
        if (
            not isinstance(path, str)
            or not self.map_path_re.fullmatch(path)
            or not path.startswith("/")
            or "/../" in f"{path}/"
        ):
            raise UnsafeRuntimeArgument("map path must be an absolute path of [A-Za-z0-9_./-]")
        return safe_word(path, "map path")

    def entries(self, entries: Mapping[str, str]) -> list[tuple[Word, Word]]:
        """Validate a whole mapping up front, so a batch is all-or-nothing on the wire."""
        return [(self.key(k), self.value(v)) for k, v in entries.items()]

    def keys_valid(self, keys: Collection[object]) -> bool:
        """True if every key passes :meth:`key`, checked in bulk. With fixed-width hex keys:
        every key a str of that length whose characters, joined, are all uppercase hex (one
        ``translate`` over all of them)."""
        if not keys:
            return True
        if set(map(type, keys)) != {str}:
            return False
        strs: Collection[str] = keys  # type: ignore[assignment]
        if self.hex_width is not None:
            if set(map(len, strs)) != {self.hex_width}:
                return False
            try:
                joined = "".join(strs).encode("ascii")
            except UnicodeEncodeError:
                return False
            return not joined.translate(None, HEX_UPPER)
        if not all(map(self.key_re.fullmatch, strs)):
            return False
        if min(map(len, strs)) < 1 or max(map(len, strs)) > MAX_WORD:
            return False
        return all(map(WORD_RE.fullmatch, strs))

    def values_valid(self, values: Iterable[object]) -> bool:
        """True if every value passes :meth:`value`; each distinct value is checked once
        (values are group sets: few distinct ones however many entries)."""
        for value in set(values):
            try:
                self.value(value)
            except UnsafeRuntimeArgument:
                return False
        return True

    def entries_valid(self, entries: Mapping[str, str | None]) -> bool:
        """True if every key and every value that is not None (a delete) passes, in bulk."""
        return self.keys_valid(entries) and self.values_valid(
            v for v in set(entries.values()) if v is not None
        )


DEFAULT_VALIDATOR = EntryValidator()

Verb = Literal[
    "add map",
    "set map",
    "del map",
    "get map",
    "show map",
    "clear map",
    "prepare map",
    "commit map",
]


def command(verb: Verb, *words: Word) -> bytes:
    """One command line from a verb and validated words."""
    # Re-check the whole line even though the types say every word was validated:
    # defence in depth, one regex per command.
    line = (" ".join((verb, *words)) + "\n").encode("ascii", "replace")
    if not _SAFE_LINE_RE.fullmatch(line) or len(line) > 3 * MAX_WORD:
        raise UnsafeRuntimeArgument("command argument outside the CLI-safe set")
    return line


def version_word(version: int) -> Word:
    """``@<version>`` of a map version (an unsigned 32-bit int)."""
    if not isinstance(version, int) or isinstance(version, bool) or not 0 <= version < 2**32:
        raise UnsafeRuntimeArgument("map version must be an unsigned 32-bit int")
    return Word(f"@{version}")


def check_raw_command(cmd: str) -> bytes:
    """Accept a raw command only if it is exactly one command: no CR/LF/NUL, no unescaped
    ``;``, no trailing ``<<`` (payload mode)."""
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
