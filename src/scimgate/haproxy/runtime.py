"""Typed Runtime API commands: the client the sync engine drives.

Every key, value and map path becomes a :data:`~scimgate.haproxy.words.Word` through the
client's :class:`~scimgate.haproxy.words.EntryValidator` before a byte is sent; raw commands
pass :func:`~scimgate.haproxy.words.check_raw_command`. Facts this relies on (HAProxy 2.6.12,
measured: docs/haproxy-facts.md §1, §2b):

- ``set map`` does not create, ``add map`` never checks duplicates (lookups see the first),
  ``del map`` removes all duplicates. Upsert = ``set``, then ``add`` only on
  ``entry not found.``: never del+add (a window of 403s), never a blind add (duplicates).
- On 2.6 ``set``/``del map`` walk the whole map (about 2 ms at 100k entries, 50-66 ms at
  1M; ``bench/scale_haproxy.py`` measures it), ``add`` does not: the sync engine keeps the
  maps it writes per change small (shards, overlay).
- ``get map`` runs the lookup requests run; on our exact-string maps ``found=yes`` means the
  key is there, with the value a request sees.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from scimgate.haproxy.connection import CliConnection, Request, RuntimeAddress
from scimgate.haproxy.errors import RuntimeCommandError, RuntimeUnavailable
from scimgate.haproxy.master import MasterProcs, show_proc
from scimgate.haproxy.payload import MAX_PAYLOAD_BYTES
from scimgate.haproxy.replace import (
    REPLACE_GROUP_ENTRIES,
    MapContent,
    ReplaceResult,
    new_timings,
    replace_maps,
)
from scimgate.haproxy.replies import (
    UNREADABLE,
    MapInfo,
    del_outcome,
    get_map_value,
    parse_info,
    parse_map_entries,
    parse_map_list,
    parse_version,
    set_outcome,
)
from scimgate.haproxy.words import (
    DEFAULT_VALIDATOR,
    EntryValidator,
    Word,
    check_raw_command,
    command,
    version_word,
)


@dataclass(frozen=True)
class UpsertResult:
    updated: int
    added: int


@dataclass(frozen=True)
class PutReadResult:
    """:meth:`RuntimeClient.put_and_read`: each key's value as read back after the write
    (None: absent; ``replies.UNREADABLE``: neither), and how many ``set``s found no entry."""

    values: dict[str, str | None]
    set_missed: int


class RuntimeClient(CliConnection):
    """A persistent, pipelined connection to one HAProxy worker with typed map commands.

    Thread-safe (the connection's lock; a whole :meth:`replace_maps` holds it). ``master`` is
    the master CLI, for :meth:`show_proc_master`."""

    def __init__(
        self,
        address: RuntimeAddress | str,
        timeout: float = 5.0,
        *,
        validator: EntryValidator = DEFAULT_VALIDATOR,
        master: RuntimeAddress | str | None = None,
        cli_timeout: int | None = 3600,
    ) -> None:
        super().__init__(address, timeout, cli_timeout=cli_timeout)
        self.master = RuntimeAddress.parse(master) if isinstance(master, str) else master
        self.validator = validator
        #: Seconds per phase of the last replace_map(s) call (for benchmarks and logs).
        self.last_replace_timings: dict[str, float] = {}
        #: Replace payloads go one request per non-interactive connection (about half
        #: HAProxy's CPU per entry; see CliConnection.one_shot); False streams them on the
        #: persistent prompt connection.
        self.payload_connections = True

    # ---- raw commands

    def execute(self, cmd: str) -> str:
        """Run exactly one raw command and return its reply (severity prefix kept).

        Refuses anything that could be more than one command. Prefer the typed methods:
        they validate keys and values against the allow-lists.
        """
        return self.exchange([Request(check_raw_command(cmd))])[0]

    def pipeline(self, cmds: Sequence[str]) -> list[str]:
        """Send many raw commands in one write; one reply per command, in order."""
        requests = [Request(check_raw_command(c)) for c in cmds]
        return self.exchange(requests) if requests else []

    def show_info(self) -> dict[str, str]:
        reply = self.exchange([Request(b"show info\n")])[0]
        info = parse_info(reply)
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
        return show_proc(self.master, self.timeout)

    # ---- maps: reading

    def list_maps(self) -> list[MapInfo]:
        reply = self.exchange([Request(b"show map\n")])[0]
        return parse_map_list(reply)

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
            words.insert(0, version_word(version))
        return parse_map_entries(self.exchange([Request(command("show map", *words))])[0])

    def show_map(self, map_path: str, version: int | None = None) -> dict[str, str]:
        """The map as HAProxy sees it; with duplicates, the first one (what lookups return)."""
        result: dict[str, str] = {}
        for key, value in self.show_map_entries(map_path, version):
            result.setdefault(key, value)
        return result

    def get_map(self, map_path: str, key: str) -> str | None:
        """Lookup through HAProxy's matcher; None if not found."""
        cmd = command("get map", self.validator.map_path(map_path), self.validator.key(key))
        reply = self.exchange([Request(cmd)])[0]
        value = get_map_value(reply)
        if value == UNREADABLE:
            raise RuntimeCommandError("get map", reply)
        return value

    def lookup_many(self, lookups: Sequence[tuple[str, str]]) -> list[str | None]:
        """``get map`` for each (map path, key), pipelined: the value a request would see,
        None when absent, ``replies.UNREADABLE`` for a reply that is neither."""
        reqs = [
            Request(command("get map", self.validator.map_path(p), self.validator.key(k)))
            for p, k in lookups
        ]
        return [get_map_value(r) for r in self.exchange(reqs)] if reqs else []

    # ---- maps: single writes

    def add_map(self, map_path: str, key: str, value: str) -> None:
        """Blind add. HAProxy keeps duplicates (lookups see the first): use upsert_map."""
        path, k, v = self._entry_words(map_path, key, value)
        self.expect_empty([Request(command("add map", path, k, v))])

    def set_map(self, map_path: str, key: str, value: str) -> bool:
        """Update an existing key (all duplicates). False if the key is absent."""
        path, k, v = self._entry_words(map_path, key, value)
        cmd = command("set map", path, k, v)
        return set_outcome(cmd.decode(), self.exchange([Request(cmd)])[0])

    def del_map(self, map_path: str, key: str) -> bool:
        """Delete every entry for key. False if it was not there."""
        cmd = command("del map", self.validator.map_path(map_path), self.validator.key(key))
        return del_outcome(cmd.decode(), self.exchange([Request(cmd)])[0])

    def upsert_map(self, map_path: str, key: str, value: str) -> bool:
        """``set``, then ``add`` on ``entry not found.`` (never del+add, never blind add).
        Returns True if the key was added, False if updated."""
        with self.session():
            if self.set_map(map_path, key, value):
                return False
            self.add_map(map_path, key, value)
            return True

    def clear_map(self, map_path: str, version: int | None = None) -> None:
        words = [self.validator.map_path(map_path)]
        if version is not None:
            words.insert(0, version_word(version))
        self.expect_empty([Request(command("clear map", *words))])

    def _entry_words(self, map_path: str, key: str, value: str) -> tuple[Word, Word, Word]:
        v = self.validator
        return v.map_path(map_path), v.key(key), v.value(value)

    # ---- maps: pipelined writes

    def upsert_many(self, map_path: str, entries: Mapping[str, str]) -> UpsertResult:
        """Pipelined upsert: all ``set``s in one write, then ``add`` for the missing ones."""
        path = self.validator.map_path(map_path)
        pairs = self.validator.entries(entries)
        if not pairs:
            return UpsertResult(0, 0)
        with self.session():
            sets = [Request(command("set map", path, k, v)) for k, v in pairs]
            missing: list[tuple[Word, Word]] = []
            failures: list[tuple[str, str]] = []
            for req, pair, reply in zip(sets, pairs, self.exchange(sets), strict=True):
                try:
                    if not set_outcome(req.label, reply):
                        missing.append(pair)
                except RuntimeCommandError as exc:
                    failures.append((exc.command, exc.reply))
            if missing:
                adds = [Request(command("add map", path, k, v)) for k, v in missing]
                for req, reply in zip(adds, self.exchange(adds), strict=True):
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
        reqs = [Request(command("del map", path, k)) for k in words]
        deleted = 0
        failures: list[tuple[str, str]] = []
        for req, reply in zip(reqs, self.exchange(reqs), strict=True):
            try:
                deleted += del_outcome(req.label, reply)
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
        reqs = [Request(command("add map", path, k, v)) for k, v in self.validator.entries(entries)]
        if reqs:
            self.expect_empty(reqs)

    def del_then_add_many(self, entries: Sequence[tuple[str, str, str | None]]) -> int:
        """For each (map path, key, value): ``del map``, then ``add map`` unless the value is
        None; every ``del`` before any ``add``, all in one pipelined exchange. Never for a
        map requests read directly: between the two a key is absent (the caller puts it in
        a map looked up first, e.g. the overlay). Returns how many keys were present."""
        v = self.validator
        checked = [
            (v.map_path(p), v.key(k), None if val is None else v.value(val))
            for p, k, val in entries
        ]
        if not checked:
            return 0
        dels = [Request(command("del map", p, k)) for p, k, _val in checked]
        adds = [Request(command("add map", p, k, val)) for p, k, val in checked if val is not None]
        replies = self.exchange([*dels, *adds])
        removed = 0
        failures: list[tuple[str, str]] = []
        for req, reply in zip(dels, replies, strict=False):
            try:
                removed += del_outcome(req.label, reply)
            except RuntimeCommandError as exc:
                failures.append((exc.command, exc.reply))
        for req, reply in zip(adds, replies[len(dels) :], strict=True):
            if reply.strip():
                failures.append((req.label, reply))
        if failures:
            raise RuntimeCommandError(
                failures[0][0], failures[0][1], f"{len(failures)} commands failed: {failures[:3]!r}"
            )
        return removed

    def put_and_read(
        self,
        map_path: str,
        entries: Mapping[str, str],
        present: Collection[str],
        *,
        drop: Collection[str] = (),
    ) -> PutReadResult:
        """Write ``entries`` into one map and read them back, in one pipelined exchange:
        ``del map`` of the keys in ``drop`` (none of ``entries``), ``set map`` for the keys
        in ``present``, ``add map`` for the others, then ``get map`` of every key of
        ``entries`` (one stream, run in order: each read sees the writes). For the small
        overlay map, whose keys the caller tracks: a ``set`` that finds no entry (the
        tracking was wrong) gets its ``add`` and its read in a second exchange; an ``add``
        of a key that was there makes a duplicate the read shows as the older value."""
        path = self.validator.map_path(map_path)
        pairs = self.validator.entries(entries)
        drops = [Request(command("del map", path, self.validator.key(k))) for k in drop]
        if not pairs and not drops:
            return PutReadResult({}, 0)
        if set(drop) & set(entries):
            raise ValueError("a key is either dropped or written, not both")
        held = set(present)
        writes = [
            Request(command("set map" if k in held else "add map", path, k, v)) for k, v in pairs
        ]
        reads = [Request(command("get map", path, k)) for k, _v in pairs]
        with self.session():
            replies = self.exchange([*drops, *writes, *reads])
            for req, reply in zip(drops, replies, strict=False):
                del_outcome(req.label, reply)  # gone either way; an error reply raises
            replies = replies[len(drops) :]
            missing: list[tuple[Word, Word]] = []
            failures: list[tuple[str, str]] = []
            for req, pair, reply in zip(writes, pairs, replies, strict=False):
                if req.data.startswith(b"set"):
                    try:
                        if not set_outcome(req.label, reply):
                            missing.append(pair)
                    except RuntimeCommandError as exc:
                        failures.append((exc.command, exc.reply))
                elif reply.strip():
                    failures.append((req.label, reply))
            if failures:
                raise RuntimeCommandError(
                    failures[0][0],
                    failures[0][1],
                    f"{len(failures)} writes failed: {failures[:3]!r}",
                )
            values = {
                str(k): get_map_value(r)
                for (k, _v), r in zip(pairs, replies[len(writes) :], strict=True)
            }
            if missing:
                self.add_many(map_path, {str(k): str(v) for k, v in missing})
                again = self.lookup_many([(map_path, str(k)) for k, _v in missing])
                values.update(zip((str(k) for k, _v in missing), again, strict=True))
        return PutReadResult(values, len(missing))

    # ---- maps: atomic replace (replace.py)

    def replace_map(
        self,
        map_path: str,
        entries: Mapping[str, str],
        *,
        max_chunk_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> ReplaceResult:
        """Atomically replace the whole map (``replace.replace_maps`` for one map).

        Lookups see the old content until the commit, then only the new one. Nothing is
        committed unless every chunk was acknowledged and the staged count is exact; on
        failure the staged version is cleared (best effort) and the error raised.
        Incremental writes to this map must not run concurrently (they would be lost at
        commit); the client lock serialises writers that share this client.
        """
        return self.replace_maps([(map_path, entries)], max_chunk_bytes=max_chunk_bytes)[0]

    def replace_maps(
        self,
        maps: Sequence[tuple[str, MapContent]],
        *,
        max_chunk_bytes: int = MAX_PAYLOAD_BYTES,
        group_entries: int = REPLACE_GROUP_ENTRIES,
        before_commit: Callable[[], None] | None = None,
        background: Callable[[], bool] | None = None,
    ) -> list[ReplaceResult]:
        """:func:`scimgate.haproxy.replace.replace_maps` with this client's validator."""
        self.last_replace_timings = new_timings()
        return replace_maps(
            self,
            self.validator,
            maps,
            max_chunk_bytes=max_chunk_bytes,
            group_entries=group_entries,
            before_commit=before_commit,
            background=background,
            one_shot_payloads=self.payload_connections,
            timings=self.last_replace_timings,
        )


def current_worker_pid(address: RuntimeAddress | str, timeout: float = 2.0) -> int:
    """The worker a NEW connection reaches (an open one may still reach an old worker after a
    reload). One round trip: the connection handshake reads the worker's pid."""
    with RuntimeClient(address, timeout, cli_timeout=None) as probe:
        probe.reconnect()
        assert probe.worker_pid is not None
        return probe.worker_pid
