"""Schema migrations (alembic), run programmatically by `scimgate up`/`serve`/`db upgrade`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from scimgate.audit.log import ensure_head
from scimgate.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(db: Database) -> None:
    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        ensure_head(conn)
    _private_sqlite_files(db)


def _private_sqlite_files(db: Database) -> None:
    """The SQLite file holds token hashes and the directory: owner-only, like the config."""
    database = db.engine.url.database
    if db.dialect != "sqlite" or not database or database == ":memory:":
        return
    for suffix in ("", "-wal", "-shm"):
        path = Path(database + suffix)
        if path.exists():
            path.chmod(0o600)
