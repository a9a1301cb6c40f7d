"""Verifying an exported audit trail offline: `scimgate audit verify --export FILE`.

Does: read an export (`scimgate audit export`, JSON lines or CSV) and walk its hash chain with
the recipe of ``audit.chain`` (docs/production.md shows it and a stand-alone verifier);
report the first event that does not hold, and what the export can and cannot prove (where it
starts, the head it ends at).
Does not: open a database. An export proves the events it holds and their order; that
nothing was cut off after its last event is proved only by comparing its last hash with the
head `scimgate audit verify` printed, and that nothing came before its first event only when
that event's prev_hash is the genesis hash.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scimgate.audit.chain import GENESIS_HASH, HASHED_FIELDS, event_hash


class ExportFormatError(ValueError):
    """A line of the file is not an exported event."""


@dataclass(frozen=True)
class ExportCheck:
    ok: bool
    events: int
    first_seq: int | None = None
    last_seq: int | None = None
    starts_after: str = GENESIS_HASH  # the first event's prev_hash
    head: str = GENESIS_HASH  # the last event's hash
    broken_seq: int | None = None
    reason: str = ""

    @property
    def complete_from_start(self) -> bool:
        return self.starts_after == GENESIS_HASH and self.first_seq in (None, 1)


def read_export(path: Path) -> Iterator[dict[str, Any]]:
    """The events of an export file, JSON lines or CSV (told apart by the first line)."""
    with path.open(encoding="utf-8", newline="") as f:
        first = f.readline()
        f.seek(0)
        if first.startswith("seq,"):
            yield from _csv_events(f)
            return
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExportFormatError(f"{path}:{number}: not a JSON line: {exc}") from None
            if not isinstance(event, dict) or "hash" not in event:
                raise ExportFormatError(f"{path}:{number}: not an exported audit event")
            yield event


def _csv_events(f: Any) -> Iterator[dict[str, Any]]:
    # CSV has no null: an empty cell is null (the store never keeps an empty string in
    # these columns). JSON lines are the exact form; prefer them for evidence.
    for row in csv.DictReader(f):
        event: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
        event["seq"] = int(row["seq"])
        event["detail"] = json.loads(row["detail"]) if row["detail"] else {}
        yield event


def verify_export(events: Iterator[dict[str, Any]]) -> ExportCheck:
    """Walk the chain: consecutive seq, each prev_hash the previous hash, each hash the
    recipe's. The first event's prev_hash is taken as given (an export may start late)."""
    count = 0
    first_seq: int | None = None
    starts_after = GENESIS_HASH
    prev: str | None = None
    expected = 0
    for event in events:
        missing = [k for k in (*HASHED_FIELDS, "prev_hash", "hash") if k not in event]
        seq = event.get("seq")
        if missing or not isinstance(seq, int):
            return ExportCheck(False, count, first_seq, None, starts_after, prev or starts_after,
                               broken_seq=seq if isinstance(seq, int) else None,
                               reason=f"fields missing: {', '.join(missing) or 'seq'}")  # fmt: skip
        if prev is None:
            first_seq, expected, prev = seq, seq, str(event["prev_hash"])
            starts_after = prev
        reason = ""
        if seq != expected:
            reason = f"missing or reordered event (expected seq {expected}, found {seq})"
        elif event["prev_hash"] != prev:
            reason = "prev_hash is not the previous event's hash"
        elif event_hash(prev, event) != event["hash"]:
            reason = "hash mismatch (the event was changed)"
        if reason:
            return ExportCheck(False, count, first_seq, seq - 1, starts_after, prev,
                               broken_seq=expected if seq != expected else seq, reason=reason)  # fmt: skip
        prev = str(event["hash"])
        expected += 1
        count += 1
    return ExportCheck(True, count, first_seq, expected - 1 if count else None, starts_after,
                       prev or GENESIS_HASH)  # fmt: skip
