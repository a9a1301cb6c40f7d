"""sync/: keep every HAProxy target equal to the desired state in the store.

Does:
  - follow the change log (the outbox) per target from its cursor, coalesce per key, apply
    through the Runtime API (``set``/``add``/``del map``), read each batch back, and record
    it (cursor, deprovision confirmations, one ``sync.applied`` audit event) in one
    transaction; measure commit → applied latency per target;
  - full atomic resync (``prepare``/``add @ver``/``commit`` per shard, from one consistent
    snapshot) at start-up, after an outage, after an HAProxy restart or reload, after a
    failed or mismatching write, and when the periodic drift check finds a difference;
  - keep each ``map_dir``'s identities map files near current (atomic writes, debounced),
    so any reload or restart loads almost current state;
  - alert on deprovisions not confirmed everywhere in time; serve read-your-writes waits,
    readiness and status (also from the database alone, for the CLI).

Does not:
  - decide what the entries are (policy/ compiles them, store/ logs them with the SCIM
    write), render or reload HAProxy's config, or start HAProxy;
  - speak the CLI wire protocol or escape anything (haproxy/runtime.py does, fail-closed);
  - trust its own bookkeeping over HAProxy: whenever unsure it resyncs.
"""

from scimgate.sync.engine import SyncEngine
from scimgate.sync.layout import MapLayout, choose_shards
from scimgate.sync.state import status_from_db

__all__ = ["MapLayout", "SyncEngine", "choose_shards", "status_from_db"]
