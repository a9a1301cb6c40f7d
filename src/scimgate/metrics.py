"""Prometheus metrics: one registry per running instance, no module-level state.

Does: define every scimgate metric (SCIM requests, propagation, targets, resyncs, audit) and
render them for a scrape.
Does not: import any other scimgate layer (api, sync, store and app all use it).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "scimgate_scim_requests_total",
            "SCIM requests",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "scimgate_scim_request_seconds",
            "SCIM request latency",
            ["endpoint", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.writes = Counter(
            "scimgate_scim_writes_total", "SCIM writes", ["resource", "operation"], registry=r
        )
        self.auth_failures = Counter(
            "scimgate_auth_failures_total", "Failed authentications", ["reason"], registry=r
        )
        self.ryw_timeouts = Counter(
            "scimgate_read_your_writes_timeouts_total",
            "Writes answered before every target confirmed",
            registry=r,
        )
        self.propagation = Histogram(
            "scimgate_propagation_seconds",
            "Commit to confirmed-in-HAProxy latency",
            ["target"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batches = Counter(
            "scimgate_sync_batches_total",
            "Batches confirmed (changes per batch: scimgate_propagation_seconds_count / this)",
            ["target"],
            registry=r,
        )
        self.target_up = Gauge(
            "scimgate_target_up", "Target reachable (1) or not (0)", ["target"], registry=r
        )
        self.target_lag = Gauge(
            "scimgate_target_lag_changes", "Changes not yet applied", ["target"], registry=r
        )
        self.overlay_entries = Gauge(
            "scimgate_target_overlay_entries",
            "Keys in the target's overlay map (changes its shards have not taken yet)",
            ["target"],
            registry=r,
        )
        self.drift_repairs = Counter(
            "scimgate_drift_repairs_total", "Drift found and repaired", ["target"], registry=r
        )
        self.sessions_cut = Counter(
            "scimgate_sessions_cut_total",
            "Live streams (WebSocket, CONNECT, long downloads) shut because their identity "
            "lost the route",
            ["target"],
            registry=r,
        )
        self.resyncs = Counter(
            "scimgate_resyncs_total", "Full atomic resyncs", ["target", "reason"], registry=r
        )
        self.unconfirmed = Gauge(
            "scimgate_unconfirmed_deprovisions",
            "Deprovisions not confirmed by every target within the threshold",
            registry=r,
        )
        self.token_expiry = Gauge(
            "scimgate_token_expiry_timestamp_seconds",
            "When each SCIM token expires",
            ["token"],
            registry=r,
        )
        self.audit_events = Gauge(
            "scimgate_audit_chain_length", "Audit events in the chain", registry=r
        )
        # --- failed authentication, slowed down (api/auth_guard.py) -------------------
        self.auth_throttled = Counter(
            "scimgate_auth_throttled_total",
            "Requests answered 429: their address was over its failed-authentication limit",
            registry=r,
        )
        self._collectors: list[Callable[[], None]] = []

    def on_render(self, fn: Callable[[], None]) -> None:
        """Register a refresher for gauges that are read from the store at scrape time."""
        self._collectors.append(fn)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint, method).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        for fn in self._collectors:
            fn()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
