"""Atomic whole-map replacement: ``prepare map`` → ``add map @ver <map> <<`` payloads →
check the staged counts → ``commit map @ver <map>``.

Facts this relies on (HAProxy 2.6.12, measured: docs/haproxy-facts.md §2a;
``bench/resync.py`` measures the whole path at 10k-1M entries):

- Lookups see the old version until ``commit``, then only the new one: a commit is atomic
  (a probe user got 200 before, during and after every replacement).
- Old and new versions coexist until the commit (about 300 bytes per entry each), so large
  replacements go in groups (:data:`REPLACE_GROUP_ENTRIES`).
- ``show map``'s ``entry_cnt`` counts staged entries too: the staged count is checked before
  any commit, which catches a payload HAProxy dropped without a reply and one that reached
  another worker after a reload.
- Incremental writes to a map being replaced are lost at its commit: callers serialise them.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from scimgate.haproxy.connection import CliConnection, Request
from scimgate.haproxy.errors import HAProxyRuntimeError, RuntimeCommandError, UnsafeRuntimeArgument
from scimgate.haproxy.payload import (
    MAX_PAYLOAD_BYTES,
    DeferredBody,
    PayloadBody,
    encode_payload,
    iter_payload_chunks,
)
from scimgate.haproxy.replies import parse_map_list, prepared_version
from scimgate.haproxy.words import EntryValidator, Word, command, version_word

#: replace_maps stages about this many entries (old + new versions coexist) per round.
REPLACE_GROUP_ENTRIES = 131_072

MapContent = Mapping[str, str] | PayloadBody | DeferredBody


@dataclass(frozen=True)
class ReplaceResult:
    version: int
    entries: int
    chunk_bytes: list[int] = field(default_factory=list)


def new_timings() -> dict[str, float]:
    """Seconds per phase of one replacement (for benchmarks and logs)."""
    return dict.fromkeys(("validate", "prepare", "chunk", "send", "before_commit", "commit"), 0.0)


def replace_maps(
    conn: CliConnection,
    validator: EntryValidator,
    maps: Sequence[tuple[str, MapContent]],
    *,
    max_chunk_bytes: int = MAX_PAYLOAD_BYTES,
    group_entries: int = REPLACE_GROUP_ENTRIES,
    before_commit: Callable[[], None] | None = None,
    background: Callable[[], bool] | None = None,
    one_shot_payloads: bool = True,
    timings: dict[str, float] | None = None,
) -> list[ReplaceResult]:
    """Replace several maps, pipelined: maps are taken in groups of about ``group_entries``
    staged entries (bounding the memory that old and new versions hold together); per group
    one round trip prepares every map, one streams every payload chunk and reads the staged
    counts, one commits. Each map flips at its own commit; a group commits only if all its
    maps staged exactly. Every entry of a map is validated before any of it is sent (a
    :class:`PayloadBody` was, with ``validator``; a :class:`DeferredBody` is when it is
    taken). ``before_commit`` runs once, before the first commit (e.g. to finish writing the
    map files). ``background`` is work to do in small steps while HAProxy parses a payload
    request (returns False when none is left), e.g. ``PendingBodies.step``. With
    ``one_shot_payloads`` each payload request goes on its own non-interactive connection
    (:meth:`CliConnection.one_shot`), else on the persistent prompt connection."""
    if not 64 <= max_chunk_bytes <= MAX_PAYLOAD_BYTES:
        raise ValueError(f"max_chunk_bytes must be within 64..{MAX_PAYLOAD_BYTES}")
    timings = new_timings() if timings is None else timings
    t = time.perf_counter()
    bodies = [(validator.map_path(path), _body(validator, content)) for path, content in maps]
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
    with conn.session():
        for group in groups:
            results += _replace_group(
                conn, group, max_chunk_bytes, timings, pending_hook, background, one_shot_payloads
            )
            pending_hook = None
    return results


def _body(validator: EntryValidator, content: MapContent) -> PayloadBody | DeferredBody:
    if isinstance(content, PayloadBody | DeferredBody):
        if content.validator is not validator and content.validator != validator:
            raise UnsafeRuntimeArgument("payload body validated with other allow-lists")
        return content
    return encode_payload(content, validator)


def _replace_group(
    conn: CliConnection,
    group: Sequence[tuple[Word, PayloadBody | DeferredBody]],
    max_chunk_bytes: int,
    timings: dict[str, float],
    before_commit: Callable[[], None] | None,
    background: Callable[[], bool] | None,
    one_shot_payloads: bool,
) -> list[ReplaceResult]:
    t = time.perf_counter()
    reqs = [Request(b"show map\n")]
    reqs += [Request(command("prepare map", path)) for path, _ in group]
    replies = conn.exchange(reqs)
    counts = {m.path: m.entry_cnt for m in parse_map_list(replies[0])}
    versions: list[int] = []
    prepared: list[tuple[Word, int]] = []
    chunk_sizes: list[list[int]] = [[] for _ in group]
    try:
        for (path, _), reply in zip(group, replies[1:], strict=True):
            version = prepared_version(reply)
            if version is None:
                raise RuntimeCommandError(f"prepare map {path}", reply)
            versions.append(version)
            prepared.append((path, version))
        missing = [path for path, _ in group if path not in counts]
        if missing:
            raise RuntimeCommandError(
                "show map", replies[0], f"map {missing[0]} is not loaded by the running config"
            )
        timings["prepare"] += time.perf_counter() - t
        t = time.perf_counter()

        def stream() -> Iterator[Request]:
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
                    yield Request(c, payload=True)

        sent: list[Request] = []

        def recorded() -> Iterator[Request]:
            for req in stream():
                sent.append(req)
                yield req

        if one_shot_payloads:
            replies = conn.one_shot(recorded(), background)
            replies += conn.exchange([Request(b"show map\n")])
        else:
            replies = conn.exchange(itertools.chain(recorded(), [Request(b"show map\n")]))
        for req, r in zip(sent, replies, strict=False):
            if r.strip():
                raise RuntimeCommandError(req.label, r)
        after = {m.path: m.entry_cnt for m in parse_map_list(replies[-1])}
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
            _discard_version(conn, path, version)
        raise
    t = time.perf_counter()
    conn.expect_empty(
        [
            Request(command("commit map", version_word(version), path))
            for (path, _), version in zip(group, versions, strict=True)
        ]
    )
    timings["commit"] += time.perf_counter() - t
    return [
        ReplaceResult(version, item.count, sizes)
        for (_, item), version, sizes in zip(group, versions, chunk_sizes, strict=True)
    ]


def _discard_version(conn: CliConnection, path: Word, version: int) -> None:
    # Best effort: the next prepare/commit purges an abandoned version anyway.
    with contextlib.suppress(HAProxyRuntimeError):
        conn.expect_empty([Request(command("clear map", version_word(version), path))])
