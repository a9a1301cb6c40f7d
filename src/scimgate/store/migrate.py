"""Schema migrations (alembic), run programmatically by `scimgate up`/`serve`/`db upgrade`."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from scimgate.store import tables
from scimgate.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"
#: The advisory lock key that serialises schema upgrades of processes sharing one database.
MIGRATION_LOCK = 0x5C1A6A7E


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(db: Database) -> None:
    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            # Replicas and agents of a fleet start together on one database: one migrates,
            # the others wait here and find the schema at head (released at commit).
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        seed_writers_row(conn)
    _private_sqlite_files(db)


def seed_writers_row(conn: Connection) -> None:
    """The one ``audit_head`` row every write transaction locks first (serialising writers on
    PostgreSQL), as it stands before any event. Part of the schema's initial state: the audit
    trail appends to it, it does not create it."""
    head = tables.audit_head
    if conn.execute(sa.select(head.c.id)).first() is None:
        conn.execute(head.insert().values(**tables.AUDIT_HEAD_START))


def _private_sqlite_files(db: Database) -> None:
    """The SQLite file holds token hashes and the directory: owner-only, like the config."""
    database = db.engine.url.database
    if db.dialect != "sqlite" or not database or database == ":memory:":
        return
    for suffix in ("", "-wal", "-shm"):
        path = Path(database + suffix)
        if path.exists():
            path.chmod(0o600)
