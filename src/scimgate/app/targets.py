"""The HAProxy targets as an operator sees them from any process: each one's sync state
(the store plus a live probe over its Runtime API), and a forced full resync.

Does: put the sync engine's records (``sync.status``) next to what each target answers
now; run ``sync.reconcile.full_resync`` for a target outside a running engine.
Does not: keep anything in memory between calls, or print (``scimgate.cli``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from scimgate.config import Settings, TargetConfig
from scimgate.haproxy import HAProxyRuntimeError, RuntimeClient, parse_version
from scimgate.store.db import Database
from scimgate.sync.apply import ENTRY_VALIDATOR
from scimgate.sync.layout import LayoutError, MapLayout, resolve_layout
from scimgate.sync.mapfiles import MapFileWriter
from scimgate.sync.reasons import ResyncReason
from scimgate.sync.reconcile import full_resync
from scimgate.sync.status import healthy, status_from_db


def probe_target(target: TargetConfig) -> dict[str, Any]:
    """Live look at one target: reachable, worker pid, version, layout, entries loaded."""
    out: dict[str, Any] = {"reachable": False}
    try:
        with RuntimeClient(target.runtime_api, 2.0, cli_timeout=None) as client:
            info = client.show_info()
            maps = client.list_maps()
            layout = MapLayout.discover([m.path for m in maps], target.map_dir)
            out.update(reachable=True, pid=int(info["Pid"]), version=info.get("Version"))
            if layout is not None:
                counts = {m.path: m.entry_cnt for m in maps}
                out.update(
                    shards=layout.shards,
                    map_dir=layout.map_dir,
                    live_entries=sum(counts.get(p, 0) for p in layout.paths),
                )
                if layout.overlay is not None:
                    # changes the shards have not taken yet (live = shards + these)
                    out["overlay_entries"] = counts.get(layout.overlay, 0)
            else:
                out["probe_error"] = "no identities map layout loaded"
    except (HAProxyRuntimeError, OSError, ValueError) as exc:
        out["probe_error"] = f"{type(exc).__name__}: {exc}"
    return out


def target_status(db: Database, settings: Settings) -> tuple[bool, list[dict[str, Any]]]:
    """Every target's row (cursor, lag, entries, last resync, unconfirmed deprovisions) with
    its live probe and a ``healthy`` verdict; True when every target is healthy."""
    rows = status_from_db(db, settings)
    by_name = {t.name: t for t in settings.targets}
    all_ok = True
    for row in rows:
        row.update(probe_target(by_name[row["target"]]))
        row["healthy"] = healthy(row, settings.deprovision_alert_seconds)
        all_ok = all_ok and row["healthy"]
    return all_ok, rows


@dataclass(frozen=True)
class ResyncOutcome:
    target: str
    entries: int = 0
    shards: int = 0
    seq: int = 0
    seconds: float = 0.0
    warning: str | None = None
    error: str | None = None


def resync_targets(
    db: Database,
    settings: Settings,
    targets: list[TargetConfig],
    on_warning: Callable[[str, str], None] | None = None,
) -> Iterator[ResyncOutcome]:
    """A full atomic resync of each target from the store (map files first when the target
    has a map_dir), recorded like the engine's own; one outcome per target, in order, as
    each ends. ``on_warning(target, text)`` hears a layout warning as soon as it is known."""
    for target in targets:
        try:
            with RuntimeClient(
                target.runtime_api, 10.0, validator=ENTRY_VALIDATOR, master=target.master_api
            ) as client:
                info = client.show_info()
                layout, warning = resolve_layout(
                    [m.path for m in client.list_maps()],
                    version=parse_version(info.get("Version", "")),
                    configured_shards=settings.map_shards,
                    map_dir=target.map_dir,
                )
                if warning and on_warning is not None:
                    on_warning(target.name, warning)
                writer = MapFileWriter(layout) if target.map_dir else None
                result = full_resync(
                    db, client, layout, target.name, ResyncReason.MANUAL, writer=writer
                )
        except (HAProxyRuntimeError, OSError, LayoutError, ValueError) as exc:
            yield ResyncOutcome(target.name, error=str(exc))
            continue
        yield ResyncOutcome(
            target.name, result.entries, layout.shards, result.seq, result.seconds, warning
        )
