"""sync/: keep every HAProxy target equal to the desired state in the store (level-triggered:
the change log makes updates fast, the resync makes them correct).

Rooms (one owner per piece of state; threads and locks: docs/architecture.md):
  - ``engine``: lifecycle, and the door the rest of the product uses;
  - ``follower``: per target, the change log into HAProxy, read back, confirmed;
  - ``overlay``: per target, the sole owner of the overlay bookkeeping and its locks;
  - ``drainer``: per target, the shards brought up to the overlay, one key per step;
  - ``sessions``: per target, live streams of identities that lost a route shut on every
    worker (old ones too), audited and counted (docs/live-sessions.md);
  - ``recorder``: durable records of confirmed batches, in order, off the followers' path;
  - ``waiters``: read-your-writes (confirmed cursors, head, waits);
  - ``housekeeping``: map files, deprovision alerts, lag gauges;
  - ``watch``: restart, reload and external-commit detection; ``reasons``: why a resync;
  - pure or store-facing helpers: ``apply`` (batches, read-back, drift diff), ``layout``
    (which map files), ``reconcile`` (full resync, drift check), ``mapfiles`` (the files),
    ``state`` (snapshots and records), ``status`` (status from the store and the engine).

Does:
  - follow the change log (the outbox) per target from its cursor, coalesce per key, apply
    through the Runtime API (an overlay map first, the shards behind it), read each batch
    back, and record it (cursor, deprovision confirmations, one ``sync.applied`` audit event)
    in one transaction; measure commit → applied latency per target;
  - full atomic resync (``prepare``/``add @ver``/``commit`` per shard, from one consistent
    snapshot) at start-up, after an outage, after an HAProxy restart or reload, after a
    failed or mismatching write, and when the periodic drift check finds a difference;
  - keep each ``map_dir``'s identities map files near current (atomic writes, debounced),
    so any reload or restart loads almost current state;
  - alert on deprovisions not confirmed everywhere in time; serve read-your-writes waits,
    readiness and status (also from the database alone, for the CLI);
  - shut the established tunnels (WebSocket, CONNECT, long downloads) of a deprovisioned
    identity on the routes it lost, off the follower's path.

Does not:
  - decide what the entries are (policy/ compiles them and defines their grammar, store/
    logs them with the SCIM write), render or reload HAProxy's config, or start HAProxy;
  - speak the CLI wire protocol or escape anything (haproxy/ does, fail-closed, with the
    allow-lists this package hands it);
  - import the web app, the CLI or the use cases: it runs without them;
  - trust its own bookkeeping over HAProxy: whenever unsure it resyncs.
"""

from scimgate.sync.engine import SyncEngine
from scimgate.sync.layout import MapLayout, choose_shards
from scimgate.sync.reasons import ResyncReason
from scimgate.sync.status import status_from_db

__all__ = ["MapLayout", "ResyncReason", "SyncEngine", "choose_shards", "status_from_db"]
