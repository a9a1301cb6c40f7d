"""Talking to HAProxy: the Runtime API, the master CLI, map files, and the HAProxy process.

Does:
  - ``words``: the CLI's grammar: every key, value and map path is checked against an
    allow-list inside a fixed CLI-safe set before a byte is sent (the CLI has no quoting:
    ``;``/LF inject commands, a trailing ``<<`` hijacks the connection, ``#0x`` addresses
    another entry); raw commands are checked to be exactly one command.
  - ``payload``: validated ``key value`` bodies, cut into ``add map @ver <<`` requests that
    fit ``tune.bufsize``, each re-checked before it is sent.
  - ``replies``: what HAProxy answers, parsed (pure).
  - ``connection``: one persistent, pipelined prompt connection per worker, and one-shot
    connections for bulk payloads.
  - ``runtime``: the typed commands (``RuntimeClient``): read, upsert as ``set`` then ``add``
    on ``entry not found.``, pipelined deletes and lookups.
  - ``replace``: atomic whole-map replacement (``prepare``/payloads/staged-count check/
    ``commit``).
  - ``master``: the master CLI: ``show proc``, commands to old workers, reload vs restart.
  - ``sessions``: one worker's streams (``show table``, ``show sess``), and a stream shut
    only after it was re-read and is still the same connection.
  - ``mapfile``: map files written atomically (temp + fsync + rename + fsync dir), so a
    reload or restart always loads the current state.
  - ``process``: find the binary, check a config, start/reload/stop a master-worker
    HAProxy by PID (tests, demo, and operators who let scimgate run HAProxy).

Does not:
  - decide what the maps contain, nor what a valid key or value of *our* maps is (that is
    ``policy``; the sync engine hands its grammar in as an :class:`EntryValidator`);
  - follow the change log, retry, coalesce or decide when to resync (that is ``sync``;
    this package reports failures as exceptions and never retries a write blindly);
  - render the HAProxy configuration, or record anything.
"""

from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.errors import (
    HAProxyRuntimeError,
    RuntimeCommandError,
    RuntimeConnectionLost,
    RuntimeUnavailable,
    UnsafeRuntimeArgument,
)
from scimgate.haproxy.master import (
    MasterLink,
    MasterProcess,
    MasterProcs,
    WorkerChange,
    master_command,
    show_proc,
    worker_change,
    worker_command,
)
from scimgate.haproxy.payload import (
    MAX_PAYLOAD_BYTES,
    DeferredBody,
    PayloadBody,
    PendingBodies,
    encode_payload,
)
from scimgate.haproxy.replace import ReplaceResult
from scimgate.haproxy.replies import MapInfo, parse_version
from scimgate.haproxy.runtime import (
    PutReadResult,
    RuntimeClient,
    UpsertResult,
    current_worker_pid,
)
from scimgate.haproxy.words import EntryValidator

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "DeferredBody",
    "EntryValidator",
    "HAProxyRuntimeError",
    "MapInfo",
    "MasterLink",
    "MasterProcess",
    "MasterProcs",
    "PayloadBody",
    "PendingBodies",
    "PutReadResult",
    "ReplaceResult",
    "RuntimeAddress",
    "RuntimeClient",
    "RuntimeCommandError",
    "RuntimeConnectionLost",
    "RuntimeUnavailable",
    "UnsafeRuntimeArgument",
    "UpsertResult",
    "WorkerChange",
    "current_worker_pid",
    "encode_payload",
    "master_command",
    "parse_version",
    "show_proc",
    "worker_change",
    "worker_command",
]
