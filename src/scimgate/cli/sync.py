"""`scimgate status` and `scimgate resync`: the sync engine's state, seen from any process
(the store plus a live probe of each target), and a forced full resync."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from scimgate.cli.options import (
    config_option,
    database_of,
    dir_option,
    settings_of,
)
from scimgate.config import Settings

if TYPE_CHECKING:
    from scimgate.instance.jwks_keys import KeyStore


@click.command("status")
@dir_option
@config_option
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

      TARGET  SESSIONS CUT  SINCE                        LAST CUT  LAST SWEEP  SWEEP RESULT
      local   0             2026-11-28T13:20:58.000001Z  -         -           -
    """
    from scimgate.app.fleet import node_status
    from scimgate.app.targets import target_status

    settings = settings_of(directory, config)
    db = database_of(settings)
    try:
        fleet = node_status(db, settings.node_live_seconds)
        if not settings.targets and not fleet:
            raise click.ClickException(
                "no targets configured (targets: in scimgate.yaml) and no fleet node has "
                "reported (scimgate agent)"
            )
        all_ok, rows = target_status(db, settings) if settings.targets else (True, [])
    finally:
        db.dispose()
    threshold = settings.deprovision_alert_seconds
    for n in fleet:
        oldest = n["oldest_unapplied_deprovision"]
        n["alert"] = oldest is not None and oldest["age_seconds"] > threshold
        all_ok = all_ok and n["live"] and not n["alert"]
    store = _key_store(settings)
    if as_json:
        out: dict[str, object] = {"healthy": all_ok, "targets": rows, "nodes": fleet}
        if store is not None:
            from scimgate.instance.jwks_follower import key_rows

            out["jwt_keys"] = key_rows(store)
            # targets whose HAProxy runs keys from before a rotation (`serve`, no config_file)
            out["jwt_reload_needed"] = sorted(store.reload_needed())
        click.echo(json.dumps(out, indent=2))
        sys.exit(0 if all_ok else 1)
    if rows:
        _print_targets(rows)
    if fleet:
        _print_nodes(fleet)
    if store is not None:
        from scimgate.instance.jwks_follower import key_table

        click.echo("")
        for key_line in key_table(store):
            click.echo(key_line)
    sys.exit(0 if all_ok else 1)


def _print_targets(rows: list[dict[str, Any]]) -> None:
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
    _print_live_sessions(rows)
    for r in rows:
        if r.get("probe_error") or r.get("last_error"):
            click.echo(f"{r['target']}: {r.get('probe_error') or r.get('last_error')}", err=True)
        newest = r["newest_unconfirmed_deprovision"]
        if newest:
            click.echo(
                f"{r['target']}: deprovision seq {newest['seq']} unconfirmed for "
                f"{newest['age_seconds']} s",
                err=True,
            )


def _print_live_sessions(rows: list[dict[str, Any]]) -> None:
    """Per target, what its cutter recorded (docs/live-sessions.md): streams cut since
    the engine started, the last cut, the last sweep and its outcome."""
    header = ("TARGET", "SESSIONS CUT", "SINCE", "LAST CUT", "LAST SWEEP", "SWEEP RESULT")
    table = [header]
    for r in rows:
        s = r["live_sessions"]
        table.append(
            (
                r["target"],
                "-" if s["cut"] is None else str(s["cut"]),
                s["since"] or "-",
                s["last_cut"] or "-",
                s["last_sweep"] or "-",
                s["last_sweep_result"] or "-",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    click.echo("")
    for line in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _print_nodes(fleet: list[dict[str, Any]]) -> None:
    header = ("NODE", "LIVE", "HEARTBEAT AGE", "CURSOR", "LAG", "DEPROVISION LAG", "WORKER",
              "HAPROXY", "FAIL-CLOSED")  # fmt: skip
    table = [header]
    for n in fleet:
        oldest = n["oldest_unapplied_deprovision"]
        table.append(
            (
                n["node"],
                "yes" if n["live"] else "NO",
                f"{n['heartbeat_age_seconds']:.1f}s",
                str(n["cursor"]),
                str(n["lag"]),
                f"{oldest['age_seconds']:.1f}s" + (" ALERT" if n["alert"] else "")
                if oldest
                else "-",
                str(n["worker_pid"] or "-"),
                n["haproxy_version"] or "-",
                "yes" if n["fail_closed"] else "no",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _key_store(settings: Settings) -> KeyStore | None:
    """The instance's JWKS key store, when its policy takes keys from a JWKS."""
    from scimgate.instance.haproxy_config import key_store
    from scimgate.instance.layout import policy_path
    from scimgate.policy.model import PolicyError, load_policy

    try:
        policy = load_policy(policy_path(settings))  # none (an HAProxy you run): no keys
    except PolicyError:
        return None
    return key_store(settings, policy)


@click.command("resync")
@dir_option
@config_option
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
    from scimgate.app.targets import resync_targets

    settings = settings_of(directory, config)
    targets = [t for t in settings.targets if target_name in (None, t.name)]
    if not targets:
        raise click.ClickException(
            f"no target named {target_name!r}" if target_name else "no targets configured"
        )
    db = database_of(settings)
    failed = 0

    def warn(target: str, warning: str) -> None:
        click.echo(f"{target}: warning: {warning}", err=True)

    try:
        for outcome in resync_targets(db, settings, targets, on_warning=warn):
            if outcome.error is not None:
                failed += 1
                click.echo(f"{outcome.target}: resync failed: {outcome.error}", err=True)
                continue
            click.echo(
                f"{outcome.target}: {outcome.entries} entries in {outcome.shards} shard(s), "
                f"seq {outcome.seq}, {outcome.seconds:.3f} s"
            )
    finally:
        db.dispose()
    sys.exit(1 if failed else 0)
