"""Backups and restores of an instance's SQLite database, and the audit event that says a
restore happened (docs/production.md, "Backups and restore").

Does: copy a live SQLite database consistently (SQLite's online backup API); restore an
older copy in place of the current database, keeping the replaced file, after checking the
copy's own hash chain; append a ``db.restore`` event to the restored chain naming the
restored head, the replaced head (so the discarded events are known) and the copy's SHA-256.
Does not: stop or start scimgate (the caller checks nothing serves the database), restore
PostgreSQL (``pg_restore`` does; ``record_restore`` then writes the event), or talk to HAProxy
(the start-up resync brings every target to the restored state).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from scimgate.audit import log as audit
from scimgate.store import migrate
from scimgate.store.db import Database


class RestoreError(RuntimeError):
    """The backup cannot be taken or restored (not SQLite, a broken chain, a file missing)."""


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Head:
        """``SEQ:HASH`` as `scimgate audit verify` shows them."""
        seq, sep, digest = text.partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64:
            raise RestoreError(f"expected SEQ:HASH (64 hex digits), not {text!r}")
        return cls(int(seq), digest.lower())


@dataclass(frozen=True)
class Restored:
    restored: Head
    replaced: Head | None
    replaced_file: Path | None
    event_seq: int


def sqlite_file(url: str) -> Path:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        raise RestoreError(
            "the database is not a SQLite file: back up PostgreSQL with pg_dump -Fc and "
            "restore it with pg_restore, then record it with `scimgate db restore --record-only`"
        )
    return Path(parsed.database)


def backup_sqlite(source: Path, target: Path) -> Head:
    """A consistent copy of a live database (other connections may write meanwhile), made
    0600; returns the copy's audit head."""
    if not source.exists():
        raise RestoreError(f"no database at {source}")
    if target.exists():
        raise RestoreError(f"{target} exists: a backup never overwrites")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return _checked_head(target)


def _checked_head(path: Path) -> Head:
    """The head of the database file at ``path`` after checking its whole chain."""
    db = Database(f"sqlite:///{path}")
    try:
        with db.read() as conn:
            result = audit.verify(conn)
            seq, digest = audit.head(conn)
    finally:
        db.dispose()
    if not result.ok:
        raise RestoreError(
            f"{path}: audit chain BROKEN at event {result.broken_seq} ({result.reason}): "
            "not restoring a database whose trail does not hold"
        )
    return Head(seq, digest)


def _head_of(db: Database) -> Head:
    with db.read() as conn:
        seq, digest = audit.head(conn)
    return Head(seq, digest)


def restore_sqlite(url: str, backup: Path, *, sqlite_synchronous: str = "FULL") -> Restored:
    """Put ``backup`` in place of the database at ``url``; the replaced file is kept as
    ``<name>.replaced-<UTC time>`` (with its -wal folded in first). Nothing may be using the
    database meanwhile."""
    current = sqlite_file(url)
    if not backup.is_file():
        raise RestoreError(f"no backup file {backup}")
    restored_head = _checked_head(backup)
    replaced: Head | None = None
    kept: Path | None = None
    if current.exists():
        old = Database(url, sqlite_synchronous=sqlite_synchronous)
        try:
            with contextlib.suppress(Exception):  # a database older than the audit tables
                replaced = _head_of(old)
        finally:
            old.dispose()
        _checkpoint(current)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        kept = current.with_name(f"{current.name}.replaced-{stamp}")
        current.replace(kept)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{current}{suffix}").unlink()
    fd = os.open(current, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    dst = sqlite3.connect(current)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    seq = record_restore(
        Database(url, sqlite_synchronous=sqlite_synchronous),
        backup=backup,
        replaced=replaced,
        replaced_file=kept,
    )
    return Restored(restored_head, replaced, kept, seq)


def _checkpoint(path: Path) -> None:
    """Fold the write-ahead log into the file, so that the kept copy is whole."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def record_restore(
    db: Database, *, backup: Path | None, replaced: Head | None, replaced_file: Path | None
) -> int:
    """Append ``db.restore`` to the (restored) chain: what it was restored from, where the
    chain stood, and the head it replaced, so that the discarded events are named. Disposes
    ``db``."""
    try:
        migrate.upgrade(db)  # an older backup may predate the current schema
        restored = _head_of(db)
        detail: dict[str, object] = {
            "restored_head": {"seq": restored.seq, "hash": restored.hash},
            "replaced_head": (
                {"seq": replaced.seq, "hash": replaced.hash} if replaced is not None else None
            ),
            "discarded_events": (
                max(0, replaced.seq - restored.seq) if replaced is not None else None
            ),
        }
        if backup is not None:
            detail["backup_file"] = str(backup)
            detail["backup_sha256"] = hashlib.sha256(backup.read_bytes()).hexdigest()
        if replaced_file is not None:
            detail["replaced_file"] = str(replaced_file)
        with db.write() as conn:
            audit.ensure_head(conn)
            return audit.append(conn, "db.restore", operation="restore", detail=detail)
    finally:
        db.dispose()
