"""One running scimgate: the store, the policy, the handler, the API and the sync engine,
wired from Settings. The CLI and the tests build instances the same way."""

from __future__ import annotations

import logging
from typing import Any

from scimgate.api.app import Api, build_app
from scimgate.app.enforcement import PolicyEnforcement, load_or_create_secret
from scimgate.app.service import ScimService
from scimgate.config import Settings
from scimgate.metrics import Metrics
from scimgate.policy.model import load_policy
from scimgate.store import migrate
from scimgate.store.db import Database

log = logging.getLogger("scimgate")


class Instance:
    def __init__(self, settings: Settings, *, with_sync: bool = True) -> None:
        self.settings = settings
        self.db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        migrate.upgrade(self.db)
        self.metrics = Metrics()
        self.enforcement: PolicyEnforcement | None = None
        if settings.policy_file is not None:
            secret_file = settings.hmac_secret_file or (settings.base_dir / "hmac.key")
            self.enforcement = PolicyEnforcement(
                load_policy(settings.policy_file), load_or_create_secret(secret_file)
            )
        self.sync: Any = None
        if with_sync and settings.targets:
            from scimgate.sync.engine import SyncEngine

            self.sync = SyncEngine.from_settings(settings, self.db, self.metrics)
        self.service = ScimService(
            self.db,
            enforcement=self.enforcement,
            on_commit=self.sync.notify if self.sync is not None else None,
        )
        self.api = Api(settings, self.service, self.metrics, self.sync)
        self.app = build_app(self.api)
        self.metrics.on_render(self._refresh_gauges)

    def _refresh_gauges(self) -> None:
        """Gauges read from the store at scrape time (cheap: indexed lookups)."""
        import sqlalchemy as sa

        from scimgate.app import tokens
        from scimgate.store import tables

        self.metrics.token_expiry.clear()
        for name, ts in tokens.expiries(self.db).items():
            self.metrics.token_expiry.labels(name).set(ts)
        with self.db.read() as conn:
            head = conn.execute(sa.select(tables.audit_head.c.seq)).scalar()
        self.metrics.audit_events.set(head or 0)

    def start(self) -> None:
        if self.sync is not None:
            self.sync.start()

    def stop(self) -> None:
        self.api.close()  # audits pending failed authentications
        if self.sync is not None:
            self.sync.stop()
        self.db.dispose()
