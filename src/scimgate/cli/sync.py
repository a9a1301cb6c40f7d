"""`scimgate status` and `scimgate resync`: the sync engine's state, seen from any process
(the store plus a live probe of each target), and a forced full resync."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from scimgate.cli.options import config_option as _config_option
from scimgate.cli.options import database_of as _db
from scimgate.cli.options import dir_option as _dir_option
from scimgate.cli.options import settings_of as _settings
from scimgate.config import TargetConfig
from scimgate.haproxy import HAProxyRuntimeError, RuntimeClient, parse_version
from scimgate.sync.layout import LayoutError, MapLayout, resolve_layout


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


@click.command("status")
@_dir_option
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(directory: str | None, config: str | None, as_json: bool) -> None:
    """Sync state of every HAProxy target, from the store and a live probe.

    Exit code 0 when every target is reachable and nothing waits longer than
    deprovision_alert_seconds; 1 otherwise (usable as a health check).

    \b
    Example:
      $ scimgate status --dir ./demo
      TARGET  REACHABLE  CURSOR  LAG  ENTRIES  LAST RESYNC                  UNCONFIRMED
      local   yes        1042    0    1000     2026-11-28T13:21:02.123456Z  0
    """
    from scimgate.sync.status import healthy, status_from_db

    settings = _settings(directory, config)
    if not settings.targets:
        raise click.ClickException("no targets configured (targets: in scimgate.yaml)")
    db = _db(settings)
    try:
        rows = status_from_db(db, settings)
    finally:
        db.dispose()
    by_name = {t.name: t for t in settings.targets}
    all_ok = True
    for row in rows:
        row.update(probe_target(by_name[row["target"]]))
        row["healthy"] = healthy(row, settings.deprovision_alert_seconds)
        all_ok = all_ok and row["healthy"]
    if as_json:
        click.echo(json.dumps({"healthy": all_ok, "targets": rows}, indent=2))
    else:
        header = ("TARGET", "REACHABLE", "CURSOR", "LAG", "ENTRIES", "LAST RESYNC", "UNCONFIRMED")
        table = [header]
        for r in rows:
            table.append(
                (
                    r["target"],
                    "yes" if r["reachable"] else "NO",
                    str(r["cursor"]),
                    str(r["lag"]),
                    str(r.get("live_entries", r["entries"])),
                    r["last_resync"] or "-",
                    str(r["unconfirmed_deprovisions"]),
                )
            )
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        for line in table:
            click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        for r in rows:
            if r.get("probe_error") or r.get("last_error"):
                click.echo(
                    f"{r['target']}: {r.get('probe_error') or r.get('last_error')}", err=True
                )
            newest = r["newest_unconfirmed_deprovision"]
            if newest:
                click.echo(
                    f"{r['target']}: deprovision seq {newest['seq']} unconfirmed for "
                    f"{newest['age_seconds']} s",
                    err=True,
                )
    sys.exit(0 if all_ok else 1)


@click.command("resync")
@_dir_option
@_config_option
@click.option("--target", "target_name", default=None, help="Only this target (default: all).")
def resync(directory: str | None, config: str | None, target_name: str | None) -> None:
    """Force a full atomic resync of HAProxy's identities maps from the store.

    Connects to each target's Runtime API, replaces every map shard atomically (prepare,
    add @ver, commit) with the desired state of one snapshot, writes the map files first
    when the target has a map_dir, and records it (cursor, audit event sync.resync). A
    running engine notices the new map version and resyncs itself to the newest state.

    \b
    Example:
      $ scimgate resync --dir ./demo --target local
      local: 1000 entries in 16 shard(s), seq 1042, 0.041 s
    """
    from scimgate.sync.apply import ENTRY_VALIDATOR
    from scimgate.sync.mapfiles import MapFileWriter
    from scimgate.sync.reasons import ResyncReason
    from scimgate.sync.reconcile import full_resync

    settings = _settings(directory, config)
    targets = [t for t in settings.targets if target_name in (None, t.name)]
    if not targets:
        raise click.ClickException(
            f"no target named {target_name!r}" if target_name else "no targets configured"
        )
    db = _db(settings)
    failed = 0
    try:
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
                    if warning:
                        click.echo(f"{target.name}: warning: {warning}", err=True)
                    writer = MapFileWriter(layout) if target.map_dir else None
                    result = full_resync(
                        db, client, layout, target.name, ResyncReason.MANUAL, writer=writer
                    )
                click.echo(
                    f"{target.name}: {result.entries} entries in {layout.shards} shard(s), "
                    f"seq {result.seq}, {result.seconds:.3f} s"
                )
            except (HAProxyRuntimeError, OSError, LayoutError, ValueError) as exc:
                failed += 1
                click.echo(f"{target.name}: resync failed: {exc}", err=True)
    finally:
        db.dispose()
    sys.exit(1 if failed else 0)


def register_sync(main: click.Group) -> None:
    main.add_command(status)
    main.add_command(resync)
