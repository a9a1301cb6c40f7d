"""`scimgate policy check`: every problem of a policy file, as FILE:LINE:COLUMN: message."""

from __future__ import annotations

from pathlib import Path

import click

from scimgate.cli.options import config_option, dir_option, policy_file_of, report_problems
from scimgate.cli.options import settings_of as _settings


@click.group("policy")
def policy_group() -> None:
    """Policy file tools."""


@policy_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@dir_option
@config_option
def policy_check(file: str | None, directory: str | None, config: str | None) -> None:
    """Validate a policy file: print every problem as FILE:LINE:COLUMN: message.

    Checks the YAML, every field, cross-references (undefined groups, unreachable routes) and
    the files it points at (the JWT public key must be a PUBLIC KEY PEM). Exit status 1 when
    anything is wrong.

    \b
    Examples:
      scimgate policy check --dir ./demo
      scimgate policy check ./policy.yaml
    """
    from scimgate.app.policy_check import check_policy

    path = Path(file) if file else policy_file_of(_settings(directory, config))
    result = check_policy(path)
    if not result.ok:
        report_problems(path, result.problems)
        raise SystemExit(1)
    for line in result.summary():
        click.echo(line)
