"""Options and helpers shared by every `scimgate` subcommand module: where the instance is,
its settings, its database, its policy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from scimgate.config import CONFIG_NAME, SQLITE_NAME, ConfigError, Settings, load_settings

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


class NoInstance(click.ClickException):
    """The directory (or config file) names no instance: a usage error (exit status 2), so
    that an auditor's typo never reads as an empty, clean instance."""

    exit_code = 2


INSTANCE_HINT = "make one with `scimgate init --dir DIR` or `scimgate up --dir DIR`"


def settings_of(directory: str | None, config: str | None, *, existing: bool = True) -> Settings:
    """The instance's settings. With ``existing`` (every command but `serve`), refuse a
    directory that holds no instance: missing, empty or mistyped (exit status 2), before
    anything is created there."""
    if existing:
        _require_instance(directory, config)
    try:
        return load_settings(directory=directory, config=config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _require_instance(directory: str | None, config: str | None) -> None:
    if config is not None:
        if not Path(config).is_file():
            raise NoInstance(f"no config file {config} ({INSTANCE_HINT})")
        return
    named = directory or os.environ.get("SCIMGATE_DIR")
    base = Path(named or ".")
    if not base.is_dir():
        raise NoInstance(f"no instance directory {base}: it does not exist ({INSTANCE_HINT})")
    if (base / CONFIG_NAME).is_file() or (base / SQLITE_NAME).is_file():
        return
    # A deployment configured by environment alone (SCIMGATE_DATABASE_URL, no --dir): its
    # database is named, so there is nothing to mistake.
    if named is None and os.environ.get("SCIMGATE_DATABASE_URL"):
        return
    raise NoInstance(
        f"{base} is not a scimgate instance: it holds no {CONFIG_NAME} ({INSTANCE_HINT})"
    )


def database_of(settings: Settings, *, create: bool = False) -> Database:
    """The instance's database, migrated to head. Without ``create``, a SQLite database that
    does not exist yet is refused (exit status 2) instead of being made empty: reading an
    empty store would report a clean audit, no access, no tokens."""
    from scimgate.instance.database import open_database

    if not create:
        missing = missing_sqlite_file(settings.database_url)
        if missing is not None:
            raise NoInstance(f"no database: {missing} does not exist ({INSTANCE_HINT})")
    return open_database(settings)


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL when it does not exist; None otherwise (or not SQLite)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


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
