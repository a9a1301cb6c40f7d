"""HAProxy map files on disk, written atomically.

HAProxy reads map files only at startup and reload; runtime changes live in memory and
are lost on a reload. So the file is the state a reload or restart will load, and it must
never be seen half-written: write a temp file in the same directory, fsync it, rename it
over the target, fsync the directory. Entries pass the same allow-lists as the Runtime API
(a map file has the same ``key value`` split, and ``#`` starts a comment).
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from scimgate.haproxy.errors import UnsafeRuntimeArgument
from scimgate.haproxy.payload import PayloadBody, encode_payload
from scimgate.haproxy.words import DEFAULT_VALIDATOR, EntryValidator

HEADER = "# written by scimgate; do not edit: changes are overwritten on the next sync\n"
_HEADER_BYTES = HEADER.encode("ascii")


def render_map(entries: Mapping[str, str], validator: EntryValidator = DEFAULT_VALIDATOR) -> bytes:
    """Map file content: validated, sorted by key (stable diffs), one ``key value`` per line."""
    ordered = {k: entries[k] for k in sorted(entries)} if validator.keys_valid(entries) else entries
    return render_body(encode_payload(ordered, validator))


def render_body(body: PayloadBody) -> bytes:
    """Map file content from an already validated body (its order: no sort, one join)."""
    return _HEADER_BYTES + body.data


def write_map_file(
    path: str | os.PathLike[str],
    entries: Mapping[str, str],
    validator: EntryValidator = DEFAULT_VALIDATOR,
    mode: int = 0o640,
) -> None:
    """Atomically replace ``path`` with the rendered entries (validated before any write)."""
    write_map_files([(path, render_map(entries, validator))], mode, skip_unchanged=False)


def write_map_files(
    files: Sequence[tuple[str | os.PathLike[str], bytes | Sequence[bytes | memoryview]]],
    mode: int = 0o640,
    *,
    skip_unchanged: bool = True,
    fsync: bool = True,
) -> int:
    """Atomically replace each path with its content (from :func:`render_map` /
    :func:`render_body`); returns how many files were written.

    Each file: one write to a temp file in the same directory, fsync, rename over the
    target; then one fsync per directory (not per file). With ``skip_unchanged`` a file
    whose current content is already exactly this is left alone (no write, no fsync).
    A content given as pieces (``mapfile_patch.patch_sorted``) is written piece by piece
    (no join: the kernel copies, the GIL is free) and never compared.
    ``fsync=False`` keeps the atomic rename but skips the syncs (crash-durability is then
    the caller's business)."""
    todo: list[tuple[Path, bytes | Sequence[bytes | memoryview]]] = []
    for path, data in files:
        target = Path(path)
        if skip_unchanged and isinstance(data, bytes) and _same_content(target, data):
            continue
        todo.append((target, data))
    written: list[tuple[str, Path]] = []
    try:
        for target, data in todo:
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
            )
            written.append((tmp_name, target))
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, bytes):
                    f.write(data)
                else:
                    f.writelines(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                if fsync:
                    os.fsync(f.fileno())
        for tmp_name, target in written:
            os.replace(tmp_name, target)
    except BaseException:
        for tmp_name, _ in written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        raise
    for directory in {target.parent for _, target in written} if fsync else ():
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return len(written)


def replace_small_file(path: str | os.PathLike[str], data: bytes, mode: int = 0o640) -> None:
    """Atomically replace one small file with as few system calls as we can (open, write,
    close, rename): a temp file named after the target and this process (one writer per
    file per process), created with ``mode`` (less the umask), no fsync (the caller's
    business, as with ``fsync=False``). For a file rewritten per batch, where each call
    also lets other threads take the GIL: :func:`write_map_files` makes twice as many."""
    target = os.fspath(path)
    tmp = _small_tmp_name(target, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@functools.lru_cache(maxsize=64)
def _small_tmp_name(target: str, pid: int) -> str:
    head, name = os.path.split(target)
    return os.path.join(head, f".{name}.{pid}.tmp")


def _same_content(target: Path, data: bytes) -> bool:
    try:
        if target.stat().st_size != len(data):
            return False
        return target.read_bytes() == data
    except OSError:
        return False


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
