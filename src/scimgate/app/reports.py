"""Proof for auditors, as use cases: the audit chain verified, its events exported, one
person's story, and who can reach each route (now, or at a past time rebuilt from the
trail).

Does: open the reads and put the audit room's pieces together.
Does not: define the chain or its checks (``scimgate.audit``), or print (``scimgate.cli``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scimgate.audit.log import VerifyResult, current_state, head, iter_events, verify
from scimgate.audit.replay import replay
from scimgate.audit.report import access_rows, render
from scimgate.audit.story import user_story
from scimgate.policy.model import load_policy
from scimgate.store.db import Database

EXPORT_COLUMNS = (
    "seq", "ts", "kind", "actor", "client", "user_agent", "request_id", "resource_type",
    "resource_id", "operation", "detail", "prev_hash", "hash",
)  # fmt: skip


def verify_chain(db: Database) -> tuple[VerifyResult, str]:
    """The whole chain checked, and the head's hash."""
    with db.read() as conn:
        return verify(conn), head(conn)[1]


def export_events(db: Database, *, since: str | None, until: str | None, fmt: str) -> Iterator[str]:
    """The events between ``since`` and ``until`` (ISO, inclusive) with their hashes (so the
    export can be verified again), as JSON lines or CSV (a header first), one text line
    each."""
    buf = io.StringIO()
    writer = csv.writer(buf) if fmt == "csv" else None

    def flushed() -> str:
        text = buf.getvalue()
        buf.seek(0)
        buf.truncate()
        return text

    if writer is not None:
        writer.writerow(EXPORT_COLUMNS)
        yield flushed()
    with db.read() as conn:
        for ev in iter_events(conn, since=since, until=until):
            if writer is not None:
                writer.writerow(
                    [
                        json.dumps(ev[c], ensure_ascii=False) if c == "detail" else ev[c]
                        for c in EXPORT_COLUMNS
                    ]
                )
                yield flushed()
            else:
                yield json.dumps(ev, ensure_ascii=False, default=str) + "\n"


def person_story(db: Database, identity: str) -> dict[str, Any] | None:
    """Created, groups gained/lost, deactivated, deleted, and when each HAProxy enforced
    each change (``audit.story``); None when the identity names no one."""
    with db.read() as conn:
        return user_story(conn, identity)


def access_report(db: Database, policy_file: Path, *, at: str | None, fmt: str) -> str:
    """For every route, who can reach it and through which group: now (from the resource
    tables) or at ``at`` (rebuilt from the audit trail)."""
    policy = load_policy(policy_file)
    with db.read() as conn:
        state: Any = replay(iter_events(conn), until=at) if at else current_state(conn)
    return render(access_rows(state, policy), fmt)
