"""`scimgate audit …` and `scimgate report …`: prove who had access to what, and when it ended."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import UTC, datetime
from typing import Any

import click
import sqlalchemy as sa

from scimgate.store import tables


def _iso(text: str | None) -> str | None:
    """Accept RFC 3339 / ISO 8601 (date or date-time); return our fixed-width UTC form."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO 8601 time: {text!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def register_audit(main: click.Group) -> None:
    from scimgate.cli.options import config_option as _config_option
    from scimgate.cli.options import database_of as _db
    from scimgate.cli.options import dir_option as _dir_option
    from scimgate.cli.options import settings_of as _settings

    @main.group()
    def audit() -> None:
        """The hash-chained audit trail: verify, export, one person's story."""

    @audit.command("verify")
    @_dir_option
    @_config_option
    def audit_verify(directory: str | None, config: str | None) -> None:
        """Check the whole chain; name the first broken event (exit 1 if any).

        \b
        Example:
          scimgate audit verify --dir ./demo
          audit chain OK: 1532 events, head 9f2c…
        """
        from scimgate.audit.log import verify

        db = _db(_settings(directory, config))
        with db.read() as conn:
            result = verify(conn)
            head = conn.execute(sa.select(tables.audit_head.c.hash)).scalar()
        if result.ok:
            click.echo(f"audit chain OK: {result.events} events, head {head}")
            return
        click.echo(
            f"audit chain BROKEN at event {result.broken_seq}: {result.reason} "
            f"({result.events} events verified before it)",
            err=True,
        )
        sys.exit(1)

    @audit.command("export")
    @_dir_option
    @_config_option
    @click.option("--since", default=None, help="ISO 8601 time (inclusive).")
    @click.option("--until", default=None, help="ISO 8601 time (inclusive).")
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
        from scimgate.audit.log import iter_events

        db = _db(_settings(directory, config))
        out = sys.stdout
        cols = [
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
            "prev_hash",
            "hash",
        ]
        writer = csv.writer(out) if fmt == "csv" else None
        if writer:
            writer.writerow(cols)
        with db.read() as conn:
            for ev in iter_events(conn, since=_iso(since), until=_iso(until)):
                if writer:
                    writer.writerow(
                        [
                            json.dumps(ev[c], ensure_ascii=False) if c == "detail" else ev[c]
                            for c in cols
                        ]
                    )
                else:
                    out.write(json.dumps(ev, ensure_ascii=False, default=str) + "\n")

    @audit.command("user")
    @click.argument("identity")
    @_dir_option
    @_config_option
    @click.option("--json", "as_json", is_flag=True)
    def audit_user(identity: str, directory: str | None, config: str | None, as_json: bool) -> None:
        """The story of one person: created, groups gained/lost, deactivated, deleted, and
        when each HAProxy enforced each change. IDENTITY is a userName, e-mail or SCIM id.

        \b
        Example:
          scimgate audit user alice@example.com --dir ./demo
        """
        from scimgate.audit.story import user_story

        db = _db(_settings(directory, config))
        with db.read() as conn:
            story = user_story(conn, identity)
        if story is None:
            raise click.ClickException(f"no user {identity!r} in the store or the audit trail")
        if as_json:
            click.echo(json.dumps(story, indent=2, ensure_ascii=False))
            return
        click.echo(f"user {story['user_name']} (id {story['user_id']})")
        for line in story["timeline"]:
            click.echo(f"  {line['ts']}  {line['what']}")
            for e in line.get("enforced", []):
                click.echo(
                    f"      enforced on {e['target']} at {e['applied']} (+{e['after_ms']:.1f} ms)"
                )
            if line.get("unconfirmed"):
                click.echo(f"      NOT CONFIRMED by: {', '.join(line['unconfirmed'])}")

    @main.group()
    def report() -> None:
        """Reports for access reviews."""

    @report.command("access")
    @_dir_option
    @_config_option
    @click.option(
        "--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True
    )
    @click.option(
        "--at",
        "at",
        default=None,
        help="ISO 8601 time: the access at that moment, rebuilt from the audit trail.",
    )
    def report_access(directory: str | None, config: str | None, fmt: str, at: str | None) -> None:
        """For every route, who can reach it and through which group.

        \b
        Example:
          scimgate report access --dir ./demo --format csv
          scimgate report access --dir ./demo --at 2026-11-01T09:00:00Z
        """
        from scimgate.audit.log import current_state, iter_events
        from scimgate.audit.replay import replay
        from scimgate.audit.report import access_rows, render
        from scimgate.policy.model import load_policy

        settings = _settings(directory, config)
        if settings.policy_file is None:
            raise click.ClickException("this instance has no policy_file")
        policy = load_policy(settings.policy_file)
        db = _db(settings)
        with db.read() as conn:
            state: Any = replay(iter_events(conn), until=_iso(at)) if at else current_state(conn)
        buf = io.StringIO(render(access_rows(state, policy), fmt))
        click.echo(buf.getvalue(), nl=False)
