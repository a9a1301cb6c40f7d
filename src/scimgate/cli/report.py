"""`scimgate report access`: for every route, who can reach it (people, agents, or anyone
on an open route) and through which group."""

from __future__ import annotations

import click

from scimgate.cli.audit import iso_option
from scimgate.cli.options import config_option, database_of, dir_option, settings_of


@click.group("report")
def report_group() -> None:
    """Reports for access reviews."""


@report_group.command("access")
@dir_option
@config_option
@click.option(
    "--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True
)
@click.option(
    "--at",
    "at",
    default=None,
    help="ISO 8601 time: the access at that moment, rebuilt from the audit trail (a date "
    "alone: at the end of that UTC day).",
)
def report_access(directory: str | None, config: str | None, fmt: str, at: str | None) -> None:
    """For every route, who can reach it and through which group: people (kind user),
    agents (kind agent, through allow_agents), and open routes (kind public or sources).

    \b
    Example:
      scimgate report access --dir ./demo --format csv
      scimgate report access --dir ./demo --at 2026-11-01T09:00:00Z
    """
    from scimgate.app.reports import access_report

    settings = settings_of(directory, config)
    if settings.policy_file is None:
        raise click.ClickException("this instance has no policy_file")
    text = access_report(
        database_of(settings), settings.policy_file, at=iso_option(at, date_means="end"), fmt=fmt
    )
    click.echo(text, nl=False)
