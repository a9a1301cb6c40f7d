"""Gauges read from the store when Prometheus scrapes (cheap: indexed lookups): when each
SCIM token expires, and how long the audit chain is."""

from __future__ import annotations

from scimgate.app import tokens
from scimgate.audit import log as audit
from scimgate.metrics import Metrics
from scimgate.store.db import Database


def refresh_gauges(db: Database, metrics: Metrics) -> None:
    metrics.token_expiry.clear()
    for name, ts in tokens.expiries(db).items():
        metrics.token_expiry.labels(name).set(ts)
    with db.read() as conn:
        metrics.audit_events.set(audit.head(conn)[0])
