"""The hash chain (pure): each event's hash covers its fields and the previous event's hash,
so editing, deleting or reordering any event breaks every hash after it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS_HASH = "0" * 64

# The fields an event's hash covers, in a fixed order (seq included: reordering is detected).
HASHED_FIELDS = (
    "seq",
    "ts",
    "kind",
    "actor",
    "client",
    "user_agent",
    "request_id",
    "resource_type",
    "resource_id",
    "operation",
    "detail",
)


def canonical(event: dict[str, Any]) -> bytes:
    body = {k: event.get(k) for k in HASHED_FIELDS}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def event_hash(prev_hash: str, event: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(event)).hexdigest()


def first_broken(events: list[dict[str, Any]], start_hash: str = GENESIS_HASH) -> int | None:
    """Index of the first event whose chain does not hold, or None when all hold."""
    prev = start_hash
    expected_seq = events[0]["seq"] if events else 0
    for i, ev in enumerate(events):
        if (
            ev["seq"] != expected_seq
            or ev["prev_hash"] != prev
            or event_hash(prev, ev) != ev["hash"]
        ):
            return i
        prev = ev["hash"]
        expected_seq += 1
    return None
