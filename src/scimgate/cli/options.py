"""Options and helpers shared by every `scimgate` subcommand module."""

from __future__ import annotations

from typing import Any

import click

from scimgate.config import ConfigError, Settings, load_settings

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


def database_of(settings: Settings) -> Any:
    """The instance's database, migrated to head."""
    from scimgate.store import migrate
    from scimgate.store.db import Database

    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    migrate.upgrade(db)
    return db
