"""One running scimgate: the store, the policy, the use cases, the API and the sync engine,
wired from Settings. `serve`, `up` and the tests build instances the same way.

The one place that connects the rooms: the store announces committed change-log rows
(``Database.on_commit``) and the sync engine's ``notify`` hears them; the API gets the use
cases (``app``) and the engine behind ``app.propagation.Propagation``.
"""

from __future__ import annotations

import logging

from scimgate.api.app import Api, build_app
from scimgate.app.authentication import Authenticator
from scimgate.app.enforcement import PolicyEnforcement
from scimgate.app.gauges import refresh_gauges
from scimgate.app.propagation import Readiness
from scimgate.app.service import ScimService
from scimgate.config import Settings
from scimgate.console import Console, build_console_app
from scimgate.instance.database import open_database
from scimgate.instance.layout import load_or_create_secret
from scimgate.metrics import Metrics
from scimgate.policy.model import load_policy
from scimgate.sync.engine import SyncEngine

log = logging.getLogger("scimgate.instance")


def enforcement_gaps(settings: Settings) -> list[str]:
    """Why this instance enforces nothing, if it does not: a SCIM endpoint without a policy
    or without a target stores identities that no HAProxy ever sees (docs/production.md)."""
    gaps = []
    if settings.policy_file is None:
        gaps.append(
            f"no policy_file in {settings.config_path.name}: identities are stored, "
            "no map entry is made from them"
        )
    if not settings.targets:
        gaps.append(
            f"no targets in {settings.config_path.name}: no HAProxy receives the identities"
        )
    return gaps


class Instance:
    def __init__(self, settings: Settings, *, with_sync: bool = True) -> None:
        self.settings = settings
        self.db = open_database(settings)
        self.metrics = Metrics()
        self.enforcement: PolicyEnforcement | None = None
        if settings.policy_file is not None:
            secret_file = settings.hmac_secret_file or (settings.base_dir / "hmac.key")
            self.enforcement = PolicyEnforcement(
                load_policy(settings.policy_file), load_or_create_secret(secret_file)
            )
        self.sync: SyncEngine | None = None
        if with_sync and settings.targets:
            self.sync = SyncEngine.from_settings(settings, self.db, self.metrics)
            # A committed write wakes the followers at once (they poll the change log too).
            self.db.on_commit(self.sync.notify)
        self.service = ScimService(self.db, enforcement=self.enforcement)
        self.api = Api(
            settings,
            self.service,
            Authenticator(self.db),
            self.metrics,
            Readiness(self.db, self.sync, enforcement_gaps(settings)),
            propagation=self.sync,
        )
        self.app = build_app(self.api)
        # The admin console reads through the use cases; served on its own listener.
        self.console_app = (
            build_console_app(Console(settings, self.db))
            if settings.console_bind is not None
            else None
        )
        self.console_url: str | None = None  # set once its listener is bound (serve)
        self.metrics.on_render(lambda: refresh_gauges(self.db, self.metrics))

    def start(self) -> None:
        for gap in enforcement_gaps(self.settings):
            log.warning("not ready: %s (/readyz answers 503)", gap)
        if self.sync is not None:
            self.sync.start()

    def stop(self) -> None:
        self.api.close()  # audits pending failed authentications
        if self.sync is not None:
            self.sync.stop()
        self.db.dispose()
