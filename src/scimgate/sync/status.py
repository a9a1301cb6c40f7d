"""A target's sync status: from the store alone (any process: ``scimgate status``), and the
running engine's live view on top of it (readiness, ``/readyz``, the engine's ``status()``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scimgate.config import Settings
from scimgate.store import tables
from scimgate.store.db import Database
from scimgate.store.outbox import head_seq
from scimgate.sync.state import TS_FORMAT, age_seconds

if TYPE_CHECKING:
    from scimgate.sync.follower import TargetFollower
    from scimgate.sync.waiters import Waiters

T, C = tables.targets, tables.change_log


def unconfirmed_deprovisions(
    conn: Connection, cursor: int
) -> tuple[int, dict[str, Any] | None, float]:
    """(count, newest {seq, age_seconds}, age of the oldest) of deprovisions past cursor."""
    q = sa.select(sa.func.count(), sa.func.max(C.c.seq), sa.func.min(C.c.created)).where(
        C.c.seq > cursor, C.c.deprovision.is_(True)
    )
    count, newest_seq, oldest_created = conn.execute(q).one()
    if not count:
        return 0, None, 0.0
    newest_created = conn.execute(sa.select(C.c.created).where(C.c.seq == newest_seq)).scalar_one()
    newest = {"seq": int(newest_seq), "age_seconds": round(age_seconds(newest_created), 3)}
    return int(count), newest, age_seconds(oldest_created)


def overdue_deprovisions(
    conn: Connection, cursor: int, older_than: float, limit: int = 1000
) -> list[tuple[int, str]]:
    """(seq, created) of deprovisions past ``cursor`` logged more than ``older_than`` s ago."""
    cutoff = (datetime.now(UTC) - timedelta(seconds=older_than)).strftime(TS_FORMAT)
    rows = conn.execute(
        sa.select(C.c.seq, C.c.created)
        .where(C.c.seq > cursor, C.c.deprovision.is_(True), C.c.created < cutoff)
        .order_by(C.c.seq)
        .limit(limit)
    )
    return [(int(r.seq), r.created) for r in rows]


def _behind_seconds(conn: Connection, cursor: int) -> float:
    oldest = conn.execute(
        sa.select(C.c.created).where(C.c.seq > cursor).order_by(C.c.seq).limit(1)
    ).scalar()
    return max(0.0, age_seconds(oldest)) if oldest else 0.0


def status_from_db(db: Database, settings: Settings) -> list[dict[str, Any]]:
    """Per configured target, what the store knows (``reachable`` is None: only a live
    probe or the running engine can say)."""
    out: list[dict[str, Any]] = []
    with db.read() as conn:
        head = head_seq(conn)
        rows = {r.name: r for r in conn.execute(sa.select(T))}
        for target in settings.targets:
            row = rows.get(target.name)
            cursor = int(row.cursor) if row is not None else 0
            count, newest, oldest_age = unconfirmed_deprovisions(conn, cursor)
            behind = _behind_seconds(conn, cursor)
            out.append(
                {
                    "target": target.name,
                    "runtime_api": target.runtime_api,
                    "reachable": None,
                    "cursor": cursor,
                    "head_seq": head,
                    "lag": max(0, head - cursor),
                    "behind_seconds": round(behind, 3),
                    "last_resync": row.last_resync if row is not None else None,
                    "last_drift_check": row.last_drift_check if row is not None else None,
                    "last_error": row.last_error if row is not None else None,
                    "entries": row.entries if row is not None else None,
                    "unconfirmed_deprovisions": count,
                    "newest_unconfirmed_deprovision": newest,
                    "oldest_unconfirmed_deprovision_age": round(oldest_age, 3),
                    "healthy": None,
                    "live_sessions": _live_sessions(row),
                }
            )
    return out


def _live_sessions(row: Any) -> dict[str, Any]:
    """What the running engine's cutter recorded (sync/sessions.py): streams cut since it
    started (``cut``, the process's ``scimgate_sessions_cut_total``; ``since``: that start),
    the last cut, and the last sweep with its outcome. None where nothing was recorded."""

    def get(name: str) -> Any:
        return getattr(row, name) if row is not None else None

    return {
        "cut": get("sessions_cut"),
        "since": get("sessions_cut_since"),
        "last_cut": get("last_session_cut"),
        "last_sweep": get("last_session_sweep"),
        "last_sweep_result": get("last_session_sweep_result"),
    }


def healthy(status: dict[str, Any], alert_seconds: float) -> bool:
    """Reachable, and nothing (least of all a deprovision) waiting longer than the alert
    threshold."""
    return bool(status.get("reachable")) and status["behind_seconds"] <= alert_seconds


def live_ready(
    followers: Sequence[TargetFollower], waiters: Waiters, alert_seconds: float
) -> tuple[bool, dict[str, Any]]:
    """Ready when every target is reachable, has no resync pending, and is caught up (or was
    within ``alert_seconds``)."""
    now = time.monotonic()
    head = waiters.head
    ok = True
    detail: dict[str, Any] = {}
    for f in followers:
        lag = max(0, head - f.cursor)
        caught_up_at = f.caught_up_at
        synced = lag == 0 or (caught_up_at is not None and now - caught_up_at <= alert_seconds)
        target_ok = f.reachable and f.resyncs.pending() is None and synced
        detail[f.name] = {
            "reachable": f.reachable,
            "lag": lag,
            "ok": target_ok,
            "error": f.last_error,
        }
        ok = ok and target_ok
    return ok, detail


def live_status(
    db: Database, settings: Settings, followers: Sequence[TargetFollower]
) -> list[dict[str, Any]]:
    """:func:`status_from_db` with what the running engine knows on top."""
    rows = status_from_db(db, settings)
    by_name = {f.name: f for f in followers}
    alert = settings.deprovision_alert_seconds
    for row in rows:
        f = by_name.get(row["target"])
        if f is None:
            continue
        layout = f.layout
        pending_resync = f.resyncs.pending()
        row["reachable"] = f.reachable
        row["shards"] = layout.shards if layout else None
        row["map_dir"] = layout.map_dir if layout else None
        row["pending_resync"] = pending_resync
        entries = f.overlay.entries
        if entries is not None:
            row["entries"] = entries  # the stored count lags the shards' drain
        row["overlay_entries"] = f.overlay.held_count
        row["pending_shard_updates"] = f.overlay.pending_count
        row["healthy"] = healthy(row, alert) and pending_resync is None
    return rows
