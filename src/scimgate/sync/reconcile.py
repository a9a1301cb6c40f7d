"""Level-triggered repair of one target: full atomic resync and the drift check.

Used by the engine's followers and by ``scimgate resync``: both record what they did the
same way (cursor, confirmations, ``sync.resync`` / ``sync.drift`` audit events)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import scimgate.sync.state as state
from scimgate.haproxy import (
    PayloadBody,
    PendingBodies,
    RuntimeClient,
    UnsafeRuntimeArgument,
    encode_payload,
)
from scimgate.metrics import Metrics
from scimgate.store.db import Database, now_iso
from scimgate.sync.apply import DriftCounts, compare_live, replace_all, valid_entries
from scimgate.sync.layout import MapLayout
from scimgate.sync.mapfiles import MapFileWriter
from scimgate.sync.reasons import ResyncReason
from scimgate.sync.threads import engine_thread

log = logging.getLogger("scimgate.sync")


@dataclass(frozen=True)
class ResyncResult:
    seq: int
    entries: int
    seconds: float
    versions: list[int]


def full_resync(
    db: Database,
    client: RuntimeClient,
    layout: MapLayout,
    target: str,
    reason: ResyncReason,
    *,
    writer: MapFileWriter | None = None,
    metrics: Metrics | None = None,
) -> ResyncResult:
    """Replace every shard with the desired state of one consistent snapshot; the map
    files (if this target has a writer) are written from it while the payloads stream and
    are finished (or found already current) before the first commit; cursor = its seq."""
    started = time.monotonic()
    payloads = state.read_resync_payloads(db, layout.shards, client.validator)
    if payloads is not None:
        try:
            snapshot = payloads.snapshot()
            versions = _replace(client, layout, snapshot, payloads.bodies, writer)
            count = payloads.entries
        except UnsafeRuntimeArgument:
            # Raised before any commit (every body is checked first): nothing changed.
            log.warning(
                "sync: bulk check of the desired state failed; resyncing entry by entry",
                extra={"target": target},
            )
            payloads = None
    if payloads is None:
        # The per-entry path: drops (and logs) what the bulk check refused as a whole.
        snapshot = state.read_snapshot(db)
        entries, rejected = valid_entries(snapshot.entries, client.validator)
        if rejected:
            log.error(
                "sync: desired entries outside the allow-lists were not sent",
                extra={"target": target, "rejected": len(rejected), "rejected_keys": rejected[:20]},
            )
        live = _present(entries)
        # Validated once, with the client's allow-lists; the same bytes go to the map files
        # and (re-checked for CLI safety) to HAProxy.
        bodies = [encode_payload(shard, client.validator) for shard in layout.split(live)]
        versions = _replace(client, layout, snapshot, bodies, writer)
        count = len(live)
    if layout.overlay is not None:
        # Last, once every shard holds the snapshot: the overlay's entries are changes the
        # snapshot includes (never newer), so until this clear they show at most an older,
        # already confirmed value, and after it the shards alone are exact.
        client.clear_map(layout.overlay)
    seconds = time.monotonic() - started
    state.record_resync(
        db,
        target,
        reason=reason,
        seq=snapshot.seq,
        entries=count,
        seconds=seconds,
        shards=layout.shards,
        applied=now_iso(),
    )
    if metrics is not None:
        metrics.resyncs.labels(target, reason).inc()
    log.info(
        "sync: full resync",
        extra={
            "target": target,
            "reason": reason,
            "seq": snapshot.seq,
            "entries": count,
            "shards": layout.shards,
            "seconds": round(seconds, 4),
        },
    )
    return ResyncResult(snapshot.seq, count, seconds, versions)


def _replace(
    client: RuntimeClient,
    layout: MapLayout,
    snapshot: state.Snapshot,
    bodies: Sequence[PayloadBody] | PendingBodies,
    writer: MapFileWriter | None,
) -> list[int]:
    """Stream the bodies (pending ones as they pass their check), writing the map files
    meanwhile; nothing is committed before every body passed and the files are done."""
    pending = bodies if isinstance(bodies, PendingBodies) else None
    writing: _Background | None = None
    if writer is not None:
        # The files are written while the payloads stream, and finished before the first
        # runtime commit: a reload racing this resync must not load older state.
        files = bodies if writer.layout == layout else None

        def write_files() -> None:
            if pending is not None:
                # The sender checks the bodies between requests; checking them here too
                # would hold the GIL against it.
                pending.done.wait()
            writer.write(snapshot, files)

        writing = _Background(write_files)

    def before_commit() -> None:
        if pending is not None:
            pending.wait()
        if writing is not None:
            writing.result()

    try:
        if pending is None:
            return list(replace_all(client, layout, {}, shards=bodies, before_commit=before_commit))
        return list(
            replace_all(
                client,
                layout,
                {},
                shards=pending.deferred(),
                before_commit=before_commit,
                background=pending.step,
            )
        )
    finally:
        if pending is not None and not pending.done.is_set():
            with contextlib.suppress(UnsafeRuntimeArgument):
                pending.wait()  # lets the file writer finish (or fail) instead of waiting
        if writing is not None:
            writing.join()


def _present(entries: dict[str, str | None]) -> dict[str, str]:
    """The entries that are not deletes (a snapshot has none: no copy then)."""
    if None not in entries.values():
        return entries  # type: ignore[return-value]
    return {k: v for k, v in entries.items() if v is not None}


class _Background:
    """Run fn in a thread; result() waits and re-raises its exception."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self._error: BaseException | None = None
        self._fn = fn
        self._thread = engine_thread(self._run, "sync-mapfiles")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # handed to the caller
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def drift_check(
    db: Database, client: RuntimeClient, layout: MapLayout, target: str, cursor: int
) -> DriftCounts | None:
    """Compare HAProxy's maps with the desired state; None if the store has moved past
    ``cursor`` (the comparison is only meaningful when the target is caught up)."""
    snapshot = state.read_snapshot(db)
    if snapshot.seq != cursor:
        return None
    entries, _ = valid_entries(snapshot.entries, client.validator)
    counts = compare_live(client, layout, {k: v for k, v in entries.items() if v is not None})
    state.record_drift_check(db, target, now_iso())
    if counts.total:
        state.record_drift(
            db,
            target,
            source="drift_check",
            missing=counts.missing,
            extra=counts.extra,
            wrong=counts.wrong,
            seq=snapshot.seq,
        )
    return counts
