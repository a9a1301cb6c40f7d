"""Options and helpers shared by every `scimgate` subcommand module: where the instance is,
its settings, its database, its policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from scimgate.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from scimgate.policy.model import Policy
    from scimgate.store.db import Database

# Heavier modules are imported where a command needs them: every `scimgate` call (a token
# created by a script, a JWT minted per test) pays for what is imported here.

dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Instance directory (made by `scimgate up --dir DIR`).",
)
config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), help="Config file (instead of --dir)."
)


def settings_of(directory: str | None, config: str | None) -> Settings:
    try:
        return load_settings(directory=directory, config=config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def database_of(settings: Settings) -> Database:
    """The instance's database, migrated to head."""
    from scimgate.instance.database import open_database

    return open_database(settings)


def policy_file_of(settings: Settings) -> Path:
    from scimgate.instance.layout import policy_path

    path = policy_path(settings)
    if not path.exists():
        raise click.ClickException(
            f"no policy file: {path} does not exist (set policy_file in {settings.config_path}, "
            "or run `scimgate up --dir DIR` once to get the demo policy)"
        )
    return path


def policy_or_exit(path: Path) -> Policy:
    """The policy; else every problem as FILE:LINE:COLUMN: message and exit status 1."""
    from scimgate.policy.model import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        report_problems(path, [str(problem) for problem in exc.problems])
        raise SystemExit(1) from None


def report_problems(path: Path, problems: list[str]) -> None:
    for problem in problems:
        click.echo(problem, err=True)
    click.echo(f"{path}: {len(problems)} error(s)", err=True)
