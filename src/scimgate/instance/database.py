"""The instance's database, opened from its settings and migrated to the head schema (what
`serve`, `up` and every command that reads or writes the store start with)."""

from __future__ import annotations

from scimgate.config import Settings
from scimgate.store import migrate
from scimgate.store.db import Database


def open_database(settings: Settings) -> Database:
    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    migrate.upgrade(db)
    return db
