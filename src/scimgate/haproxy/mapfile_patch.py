"""Changing a few lines of a large map file without rebuilding it.

Does: drop the lines of some keys and insert new ones, in bytes, for files of ``key value``
lines. In a file scimgate wrote sorted by key (its header carries :data:`SORTED_MARK`), each
key is found by binary search over the bytes (O(log n) per key) and the result is a list of
pieces (views into the old content plus the new lines) to write out: no copy of the file in
Python. In any other file, one linear pass.

Does not: read or write files, validate entries (the caller's encoder did), know shards.

Why: with HAProxy 2.9+ scimgate keeps one map of every identity: at 1M identities the file
is ~64 MB. Patching it by searching each key and re-slicing the whole content per key held
the GIL for ~5 s for 64 keys (measured), stalling every follower; the sorted patch of 400
keys is ~10 ms of Python work, the rest is the kernel copying pages while the GIL is free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: A second header line: every line after the header is in ascending byte order of its key
#: (one line per key). Only writers that sorted the lines themselves put it there.
SORTED_MARK = b"# sorted by key\n"

#: Up to this many keys, :func:`drop_lines` searches each key (C-speed ``find``) instead of
#: splitting the content into lines in Python.
FIND_LIMIT = 64

Piece = bytes | memoryview


def header_end(data: bytes) -> int:
    """Offset of the first line that is not a ``#`` comment."""
    pos = 0
    while data.startswith(b"#", pos):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return len(data)
        pos = nl + 1
    return pos


def is_sorted_file(data: bytes, header: bytes) -> bool:
    """The content starts with ``header`` and the sorted mark."""
    return data.startswith(header) and data.startswith(SORTED_MARK, len(header))


def _line_end(data: bytes, start: int, stop: int) -> int:
    """Offset just past the line starting at ``start`` (its LF included)."""
    nl = data.find(b"\n", start, stop)
    return stop if nl < 0 else nl + 1


def _key_at(data: bytes, start: int, stop: int) -> bytes:
    end = _line_end(data, start, stop)
    line = data[start:end]
    return line.split(b" ", 1)[0].rstrip(b"\n")


def lower_bound(data: bytes, key: bytes, lo: int, hi: int) -> int:
    """In sorted lines between the line starts ``lo`` and ``hi``, the start of the first line
    whose key is not below ``key`` (``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) // 2
        nl = data.rfind(b"\n", lo, mid)
        start = lo if nl < 0 else nl + 1  # the line holding ``mid``: lo <= start <= mid
        if _key_at(data, start, hi) < key:
            lo = _line_end(data, start, hi)
        else:
            hi = start
    return lo


def patch_sorted(data: bytes, drop: Iterable[bytes], add: Mapping[bytes, bytes]) -> list[Piece]:
    """Pieces whose concatenation is ``data`` (a sorted file, :func:`is_sorted_file`) without
    the lines of ``drop`` and of ``add``'s keys, with ``add``'s lines (``key value\\n``) in
    their sorted places: still sorted, still marked."""
    view = memoryview(data)
    end = len(data)
    if data and not data.endswith(b"\n"):  # a last line without LF: only ever hand-made
        data = data + b"\n"
        view = memoryview(data)
        end = len(data)
    cursor = header_end(data)
    pieces: list[Piece] = [view[:cursor]]
    for key in sorted(set(drop) | set(add)):
        pos = lower_bound(data, key, cursor, end)
        if pos > cursor:
            pieces.append(view[cursor:pos])
        cursor = pos
        while cursor < end and _key_at(data, cursor, end) == key:
            cursor = _line_end(data, cursor, end)
        line = add.get(key)
        if line is not None:
            pieces.append(line)
    if cursor < end:
        pieces.append(view[cursor:])
    return pieces


def drop_lines(data: bytes, keys: set[bytes]) -> bytes:
    """``data`` (map file content, any order) without the lines whose first word is one of
    ``keys``, ending with a newline when not empty. Linear: the spans to drop are found
    first, the rest joined once."""
    if len(keys) <= FIND_LIMIT:
        spans: list[tuple[int, int]] = []
        end = len(data)
        for key in keys:
            if data.startswith(key + b" "):
                spans.append((0, _line_end(data, 0, end)))
            needle = b"\n" + key + b" "
            found = data.find(needle)
            while found >= 0:
                stop = _line_end(data, found + 1, end)
                spans.append((found + 1, stop))
                found = data.find(needle, stop - 1)
        spans.sort()
        parts: list[bytes] = []
        cursor = 0
        for start, stop in spans:
            parts.append(data[cursor:start])
            cursor = stop
        parts.append(data[cursor:])
        out = b"".join(parts)
    else:
        out = b"".join(
            line for line in data.splitlines(keepends=True) if line.split(b" ", 1)[0] not in keys
        )
    if out and not out.endswith(b"\n"):
        out += b"\n"
    return out
