"""`scimgate audit verify|export|user`: prove who had access to what, and when it ended."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import click

from scimgate.cli.options import config_option, database_of, dir_option, settings_of


def iso_option(text: str | None, *, date_means: Literal["start", "end"] = "start") -> str | None:
    """Accept RFC 3339 / ISO 8601 (date or date-time); return our fixed-width UTC form.

    A date alone is a whole UTC day: as a lower bound (``--since``) it starts at 00:00:00, as
    an upper bound or a moment (``--until``, ``--at``) it ends at 23:59:59.999999, so that
    ``--until 2026-12-03`` includes everything that happened on the 3rd."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    if date_means == "end" and _DATE_ONLY.match(text.strip()):
        dt = dt + timedelta(days=1) - timedelta(microseconds=1)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DATE_ONLY = re.compile(r"^\d{4}-?\d{2}-?\d{2}$")


@click.group("audit")
def audit_group() -> None:
    """The hash-chained audit trail: verify, export, one person's story."""


@audit_group.command("verify")
@dir_option
@config_option
@click.option(
    "--export",
    "export_file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Verify this exported file (jsonl or csv) offline instead: no database needed.",
)
def audit_verify(directory: str | None, config: str | None, export_file: str | None) -> None:
    """Check the whole chain; name the first broken event (exit 1 if any).

    With --export FILE, check an export made by `scimgate audit export` instead, without the
    database (docs/production.md has the hash recipe and a stand-alone verifier).

    \b
    Examples:
      scimgate audit verify --dir ./demo
      audit chain OK: 1532 events, head 9f2c…
      scimgate audit verify --export audit-2026-11.jsonl
    """
    if export_file is not None:
        if directory is not None or config is not None:
            raise click.UsageError("--export verifies a file alone: drop --dir/--config")
        verify_export_file(Path(export_file))
        return
    from scimgate.app.reports import verify_chain

    result, head = verify_chain(database_of(settings_of(directory, config)))
    if result.ok:
        click.echo(f"audit chain OK: {result.events} events, head {head}")
        return
    click.echo(
        f"audit chain BROKEN at event {result.broken_seq}: {result.reason} "
        f"({result.events} events verified before it)",
        err=True,
    )
    sys.exit(1)


def verify_export_file(path: Path) -> None:
    from scimgate.audit.exported import ExportFormatError, read_export, verify_export

    try:
        check = verify_export(read_export(path))
    except (ExportFormatError, ValueError, KeyError) as exc:
        click.echo(f"export NOT VERIFIED: {exc}", err=True)
        sys.exit(1)
    if not check.ok:
        click.echo(
            f"export BROKEN at event {check.broken_seq}: {check.reason} "
            f"({check.events} events verified before it)",
            err=True,
        )
        sys.exit(1)
    if check.events == 0:
        click.echo(f"export OK: 0 events in {path}")
        return
    click.echo(
        f"export OK: {check.events} events, seq {check.first_seq}..{check.last_seq}, "
        f"head {check.head}"
    )
    if check.complete_from_start:
        click.echo("starts at the first event of the trail (prev_hash is the genesis hash)")
    else:
        click.echo(
            f"starts after event {check.first_seq - 1 if check.first_seq else '?'} "
            f"(prev_hash {check.starts_after}): a partial export"
        )


@audit_group.command("export")
@dir_option
@config_option
@click.option(
    "--since", default=None, help="ISO 8601 time (inclusive); a date alone: from its start."
)
@click.option("--until", default=None, help="ISO 8601 time (inclusive); a date alone: to its end.")
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True
)
def audit_export(
    directory: str | None, config: str | None, since: str | None, until: str | None, fmt: str
) -> None:
    """Export events (with their hashes, so the export can be re-verified).

    \b
    Example:
      scimgate audit export --dir ./demo --since 2026-11-01 --format csv > audit.csv
    """
    from scimgate.app.reports import export_events

    db = database_of(settings_of(directory, config))
    for line in export_events(
        db, since=iso_option(since), until=iso_option(until, date_means="end"), fmt=fmt
    ):
        sys.stdout.write(line)


@audit_group.command("user")
@click.argument("identity")
@dir_option
@config_option
@click.option("--json", "as_json", is_flag=True)
def audit_user(identity: str, directory: str | None, config: str | None, as_json: bool) -> None:
    """The story of one person: created, groups gained/lost, deactivated, deleted, and
    when each HAProxy enforced each change. IDENTITY is a userName, e-mail or SCIM id; or,
    when no person has it, an agent's name, agentUserName, subject or SCIM id.

    \b
    Example:
      scimgate audit user alice@example.com --dir ./demo
    """
    from scimgate.app.reports import person_story

    story = person_story(database_of(settings_of(directory, config)), identity)
    if story is None:
        raise click.ClickException(f"no user or agent {identity!r} in the store or the audit trail")
    if as_json:
        click.echo(json.dumps(story, indent=2, ensure_ascii=False))
        return
    click.echo(f"{story['kind']} {story['user_name']} (id {story['user_id']})")
    for line in story["timeline"]:
        click.echo(f"  {line['ts']}  {line['what']}")
        for e in line.get("enforced", []):
            click.echo(
                f"      enforced on {e['target']} at {e['applied']} (+{e['after_ms']:.1f} ms)"
            )
        if line.get("unconfirmed"):
            click.echo(f"      NOT CONFIRMED by: {', '.join(line['unconfirmed'])}")
