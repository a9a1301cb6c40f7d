"""HAProxy map files on disk, written atomically.

HAProxy reads map files only at startup and reload; runtime changes live in memory and
are lost on a reload. So the file is the state a reload or restart will load, and it must
never be seen half-written: write a temp file in the same directory, fsync it, rename it
over the target, fsync the directory. Entries pass the same allow-lists as the Runtime API
(a map file has the same ``key value`` split, and ``#`` starts a comment).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from scimgate.haproxy.runtime import DEFAULT_VALIDATOR, EntryValidator, UnsafeRuntimeArgument

HEADER = "# written by scimgate; do not edit: changes are overwritten on the next sync\n"


def render_map(entries: Mapping[str, str], validator: EntryValidator = DEFAULT_VALIDATOR) -> bytes:
    """Map file content: validated, sorted by key (stable diffs), one ``key value`` per line."""
    pairs = sorted(validator.entries(entries))
    return (HEADER + "".join(f"{k} {v}\n" for k, v in pairs)).encode("ascii")


def write_map_file(
    path: str | os.PathLike[str],
    entries: Mapping[str, str],
    validator: EntryValidator = DEFAULT_VALIDATOR,
    mode: int = 0o640,
) -> None:
    """Atomically replace ``path`` with the rendered entries (validated before any write)."""
    target = Path(path)
    data = render_map(entries, validator)
    directory = target.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_map_file(
    path: str | os.PathLike[str],
    validator: EntryValidator | None = DEFAULT_VALIDATOR,
) -> dict[str, str]:
    """Parse a map file the way HAProxy does: ``#`` lines and blank lines are skipped,
    the key is the first word, the value is the rest of the line. The first of
    duplicate keys wins (as in HAProxy lookups). With a validator, a line outside the
    allow-lists raises :class:`UnsafeRuntimeArgument` (the file was tampered with)."""
    entries: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n").strip(" \t")
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            key = parts[0]
            value = parts[1].strip(" \t") if len(parts) > 1 else ""
            if validator is not None:
                try:
                    validator.key(key)
                    validator.value(value)
                except UnsafeRuntimeArgument as exc:
                    raise UnsafeRuntimeArgument(f"{path}:{lineno}: {exc}") from exc
            entries.setdefault(key, value)
    return entries
