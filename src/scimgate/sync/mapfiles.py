"""The identities map files of one ``map_dir``, kept near the desired state so that a
reload or restart (ours or anyone's) loads almost current state; the resync that follows
makes it exact. One writer per directory, however many targets read from it."""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

from scimgate.haproxy import PayloadBody, encode_payload
from scimgate.haproxy.mapfile import HEADER, render_body, replace_small_file, write_map_files
from scimgate.haproxy.mapfile_patch import (
    SORTED_MARK,
    drop_lines,
    header_end,
    is_sorted_file,
    patch_sorted,
)
from scimgate.policy.compiler import OVERLAY_TOMBSTONE, shard_of
from scimgate.store.db import Database
from scimgate.store.outbox import MapChange
from scimgate.sync.apply import ENTRY_VALIDATOR, valid_entries
from scimgate.sync.layout import MapLayout
from scimgate.sync.state import (
    Snapshot,
    keys_changed_between,
    read_entries_of,
    read_shard_entries,
)

log = logging.getLogger("scimgate.sync")

#: At most one write of a directory's files per this many seconds while changes flow.
DEBOUNCE_SECONDS = 1.0
#: With an overlay file, the shard files (MBs each at 1M identities; patching them holds the
#: GIL against the followers) are rewritten this rarely, or once the overlay file holds more
#: than OVERLAY_FILE_MAX_KEYS keys: until then the overlay file carries every change.
SHARD_FILES_DEBOUNCE_SECONDS = 10.0
OVERLAY_FILE_MAX_KEYS = 2000

_HEADER = HEADER.encode("ascii")


class MapFileWriter:
    """The shard files (debounced, incremental) and, when the layout has one, the overlay
    file: every key changed after the shard files' seq, with its newest value (or the
    tombstone). Shards + overlay file = the desired state as of the newest change the
    followers handed in, whatever lag the shard files have; the overlay file is tiny and is
    written before a deprovision is confirmed, the shard files are not on that path.

    The overlay file is kept from what the followers hand in (:meth:`note`: each batch's
    final value per key, already read from the change log) and never re-read from the
    store. Only the engine's writer (``db`` given) writes an overlay file."""

    def __init__(self, layout: MapLayout, db: Database | None = None) -> None:
        self._layout = layout
        self.db = db
        self.written_seq = -1
        self.last_write = 0.0  # monotonic, of the shard files
        self.overlay_seq = -1  # newest change in the overlay file when last written
        # _lock: the shard files, written_seq, last_write, and (with _overlay_lock) _layout.
        # Lock order: _lock, then _overlay_lock.
        self._lock = threading.Lock()
        # _overlay_lock: the overlay file, overlay_seq, _recent, _noted_seq (and, with _lock,
        # _layout). Its own lock: a follower confirming a deprovision must not wait for a
        # shard-file pass (~0.25-1 s at 1M identities, traced as 1 s outliers). Written while
        # the shard files change, it holds the changes after the older written_seq: a
        # superset, with newest values, so still exact on top of either.
        self._overlay_lock = threading.Lock()
        # The changes after written_seq that the followers handed in, validated once when
        # handed in: key -> seq of its newest change, and key -> its overlay-file line.
        self._recent_seq: dict[str, int] = {}
        self._recent_line: dict[str, bytes] = {}
        self._noted_seq = -1  # the newest seq handed in (dropped or kept)
        self._pruned_at = -1  # written_seq when _recent_* were last pruned

    @property
    def layout(self) -> MapLayout:
        """The files this writer keeps (replaced only under both locks: :meth:`adopt`)."""
        return self._layout

    def adopt(self, layout: MapLayout) -> None:
        """The same files, now also with an overlay file (a target's config loads one): takes
        both locks, so no write in progress sees the layout change under it."""
        if layout != self._layout:
            raise ValueError("a writer keeps one set of shard files; make a new writer")
        with self._lock, self._overlay_lock:
            self._layout = layout

    @property
    def _with_overlay_file(self) -> bool:
        return self._layout.overlay is not None and self.db is not None

    @property
    def overlay_keys(self) -> int:
        """Keys the overlay file holds (or will at its next write)."""
        with self._overlay_lock:
            return len(self._recent_line)

    def note(self, changes: Iterable[MapChange], *, write: bool = False) -> bool:
        """A follower applied these changes (one batch, each key's final change): they go
        into the overlay file's content (a key keeps its newest change, whichever follower
        hands it in first). ``write``: rewrite the overlay file now (before a deprovision is
        confirmed). Returns True if the file was written. A change outside the allow-lists
        never enters the file: its key is then absent, which HAProxy denies."""
        if not self._with_overlay_file:
            return False
        newest = {c.identity_key: c for c in changes}
        valid, _rejected = valid_entries(
            {k: OVERLAY_TOMBSTONE if c.value is None else c.value for k, c in newest.items()}
        )
        body = encode_payload({k: v for k, v in valid.items() if v is not None}, ENTRY_VALIDATOR)
        lines = body.data.split(b"\n")[:-1]
        with self._overlay_lock:
            for key, line in zip(valid, lines, strict=True):
                seq = newest[key].seq
                if seq > self.written_seq and seq > self._recent_seq.get(key, -1):
                    self._recent_seq[key] = seq
                    self._recent_line[key] = line + b"\n"
            self._noted_seq = max(self._noted_seq, *(c.seq for c in newest.values()))
            return self._write_overlay_locked() if write else False

    def catch_up_overlay(self, db: Database, upto: int) -> bool:
        """Changes up to ``upto`` that no follower has handed in (every target of this
        directory down or behind) go into the overlay file from the store, each key with its
        current desired value. Without this, a user deprovisioned while the target was down
        kept their line in the overlay file until the shard files' debounce, and an HAProxy
        restarted in that window admitted them. Returns True if the file was written."""
        if not self._with_overlay_file:
            return False
        with self._overlay_lock:
            after = max(self._noted_seq, self.written_seq)
            if self.written_seq < 0 or upto <= after:
                return False
        keys = keys_changed_between(db, after, upto)
        if keys is None:  # a backlog this large is the shard writer's (OVERLAY_FILE_MAX_KEYS)
            return False
        current = read_entries_of(db, keys)
        changes = [MapChange(upto, key, value, None, False) for key, value in current.items()]
        return self.note(changes, write=True) if changes else False

    def write_overlay(self) -> bool:
        """Rewrite the overlay file now (no-op without an overlay, for a writer that is
        not the engine's, or before the shard files were written once). Returns True if
        written."""
        with self._overlay_lock:
            return self._write_overlay_locked()

    def _write_overlay_locked(self) -> bool:
        """Caller holds ``_overlay_lock`` (and may hold ``_lock``: always in that order)."""
        overlay = self._layout.overlay
        if overlay is None or not self._with_overlay_file or self.written_seq < 0:
            return False
        if self._pruned_at != self.written_seq:
            # The shard files took these (written_seq moved): only newer changes stay.
            self._pruned_at = self.written_seq
            for key in [k for k, s in self._recent_seq.items() if s <= self.written_seq]:
                del self._recent_seq[key], self._recent_line[key]
        # Tiny, and rewritten per batch: no compare with the old content, no fsync (a reload
        # reads the page cache; a host crash restarts everything with a resync).
        replace_small_file(overlay, b"".join([_HEADER, *self._recent_line.values()]))
        self.overlay_seq = max(self._noted_seq, self.written_seq)
        return True

    def due(self, head: int) -> bool:
        """Time to bring the shard files up to ``head``."""
        if head <= self.written_seq:
            return False
        age = time.monotonic() - self.last_write
        if self._with_overlay_file and self.written_seq >= 0:
            return age >= SHARD_FILES_DEBOUNCE_SECONDS or self.overlay_keys > OVERLAY_FILE_MAX_KEYS
        return age >= DEBOUNCE_SECONDS

    def overlay_due(self) -> bool:
        """Changes were handed in since the overlay file was written (grants: deprovisions
        write it before they are confirmed)."""
        with self._overlay_lock:
            return (
                self._with_overlay_file
                and self.written_seq >= 0
                and max(self._noted_seq, self.written_seq) > self.overlay_seq
            )

    def write(self, snapshot: Snapshot, bodies: Sequence[PayloadBody] | None = None) -> bool:
        """Write every shard's file from the snapshot unless newer files are already there.
        ``bodies`` (one validated body per shard, in shard order) saves re-encoding when the
        caller has them. Files whose content is already exactly this are not rewritten
        (a restarted engine whose files are current writes nothing). Returns True if the
        files are now the snapshot's (written or found current), False if skipped as older."""
        with self._lock:
            # Strictly older only: at an equal seq the files are rewritten where they differ
            # (skip_unchanged), which repairs files changed behind our back (a resync after
            # a restart must leave files that a further restart loads correctly).
            if snapshot.seq < self.written_seq and self._complete():
                return False
            started = time.monotonic()
            rejected: list[str] = []
            if bodies is None:
                entries, rejected = valid_entries(snapshot.entries)
                shards = self._layout.split({k: v for k, v in entries.items() if v is not None})
                bodies = [encode_payload(e, ENTRY_VALIDATOR) for e in shards]
            if len(bodies) != self._layout.shards:
                raise ValueError(f"{len(bodies)} bodies for {self._layout.shards} shards")
            written = write_map_files(
                [(p, render_body(b)) for p, b in zip(self._layout.paths, bodies, strict=True)]
            )
            self.written_seq = snapshot.seq
            with self._overlay_lock:
                self._write_overlay_locked()
            self.last_write = time.monotonic()
            log.debug(
                "sync: map files written",
                extra={
                    "map_dir": self._layout.map_dir,
                    "seq": snapshot.seq,
                    "entries": sum(b.count for b in bodies),
                    "files_written": written,
                    "rejected": len(rejected),
                    "seconds": round(self.last_write - started, 4),
                },
            )
            return True

    def mark_written(self, seq: int) -> None:
        """Files now hold at least the desired state at ``seq`` (after an incremental write)."""
        with self._lock:
            self.written_seq = max(self.written_seq, seq)
            with self._overlay_lock:
                self._write_overlay_locked()
            self.last_write = time.monotonic()

    def write_shards_of(self, db: Database, keys: Iterable[str]) -> int:
        """Bring, now, the files of the shards holding these keys up to the desired state of
        these keys in the store (which already includes the batch being applied).

        Called before a batch that deprovisions is confirmed, so that a reload or restart
        racing the batch loads files without the revoked access (the debounced writer alone
        would leave files up to DEBOUNCE_SECONDS behind: an acknowledged deactivation undone
        on the new worker). Cost is O(shard file) of byte work plus O(keys) indexed reads:
        each touched file is patched (lines of these keys dropped, their current entries
        appended), not rebuilt from the store, which at 1M identities in 16 shards was
        ~0.5 s per batch. No fsync: a reload reads the page cache; after a host crash
        everything restarts and the start-up resync makes HAProxy exact. Returns files
        written."""
        keys = list(keys)
        if not keys:
            return 0
        with self._lock:
            by_shard: dict[int, set[str]] = {}
            for key in keys:
                by_shard.setdefault(shard_of(key, self._layout.shards), set()).add(key)
            current = read_entries_of(db, [k for ks in by_shard.values() for k in ks])
            valid, _rejected = valid_entries(current)
            files: list[tuple[str, bytes | Sequence[bytes | memoryview]]] = []
            for shard, shard_keys in sorted(by_shard.items()):
                path = Path(self._layout.paths[shard])
                if not path.exists():
                    entries = read_shard_entries(db, shard, self._layout.shards)
                    ok, _ = valid_entries(entries)
                    body = encode_payload(
                        {k: v for k, v in ok.items() if v is not None}, ENTRY_VALIDATOR
                    )
                    files.append((str(path), _sorted_file(body.data.split(b"\n")[:-1])))
                    continue
                data = path.read_bytes()  # the read releases the GIL; no copy after it
                dropped = {k.encode("ascii") for k in shard_keys}
                add = encode_payload(
                    {k: v for k, v in valid.items() if k in shard_keys and v is not None},
                    ENTRY_VALIDATOR,
                )
                if is_sorted_file(data, _HEADER):
                    lines = {
                        line.split(b" ", 1)[0]: line for line in add.data.splitlines(keepends=True)
                    }
                    files.append((str(path), patch_sorted(data, dropped, lines)))
                else:  # as a resync wrote it (store order), or hand-made: sorted once here
                    kept = drop_lines(data[header_end(data) :], dropped) + add.data
                    files.append((str(path), _sorted_file(kept.split(b"\n")[:-1])))
            return write_map_files(files, fsync=False, skip_unchanged=False)

    def _complete(self) -> bool:
        return all(Path(p).exists() for p in self._layout.paths)


class MapFiles:
    """One :class:`MapFileWriter` per ``map_dir``, however many targets read from it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # _lock: _writers (which writer serves which directory). Taken before a writer's
        # locks, but released before any call that takes them.
        self._lock = threading.Lock()
        self._writers: dict[str, MapFileWriter] = {}

    @staticmethod
    def _dir(map_dir: str) -> str:
        return map_dir.rstrip("/") or "/"

    def writer_for(self, map_dir: str, layout: MapLayout) -> MapFileWriter:
        """The writer of ``map_dir`` for the layout a target loads: a new one when the shard
        layout changed; the same one, adopting the overlay, when only that was discovered."""
        key = self._dir(map_dir)
        with self._lock:
            writer = self._writers.get(key)
            if writer is None or writer.layout != layout:
                if writer is not None:
                    log.warning(
                        "sync: map_dir layout changed",
                        extra={"map_dir": key, "shards": layout.shards},
                    )
                writer = MapFileWriter(layout, self.db)
                self._writers[key] = writer
                return writer
        if layout.overlay is not None and layout.overlay != writer.layout.overlay:
            writer.adopt(layout)  # outside _lock: it waits for a write in progress
        return writer

    def writer_of(self, map_dir: str) -> MapFileWriter | None:
        with self._lock:
            return self._writers.get(self._dir(map_dir))

    def writers(self) -> list[MapFileWriter]:
        with self._lock:
            return list(self._writers.values())

    def prepare(self, map_dirs: Iterable[str], shards: int) -> None:
        """Writers for directories whose layout is known before any target answers."""
        for d in map_dirs:
            if self.writer_of(d) is None:
                self.writer_for(d, MapLayout(self._dir(d), shards))


def _sorted_file(lines: list[bytes]) -> bytes:
    """A shard file's content: the header, the sorted mark and these ``key value`` lines
    (without LF) in key order, so that later patches bisect (``mapfile_patch``).

    Done once per shard file after each full write (a resync writes the store's order: an
    ordered read costs 5-8x at 1M on SQLite), by the housekeeping thread or a deprovision's
    patch. One ``sort`` of 1M lines is one C call holding the GIL ~0.4 s against the
    followers, so the lines are dealt by their first two bytes (a Python loop, which lets
    other threads in) and each small pile is sorted on its own: piles in byte order, each
    sorted, is the whole sorted."""
    if not all(map(operator.lt, lines, islice(lines, 1, None))):
        piles: dict[bytes, list[bytes]] = {}
        for line in lines:
            pile = piles.get(line[:2])
            if pile is None:
                piles[line[:2]] = [line]
            else:
                pile.append(line)
        lines = []
        for prefix in sorted(piles):
            pile = piles[prefix]
            pile.sort()
            lines += pile
    # one join, the header as its first element and b"" for the final LF
    return b"\n".join([_HEADER + SORTED_MARK[:-1], *lines, b""])
