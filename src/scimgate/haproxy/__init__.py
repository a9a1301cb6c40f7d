"""Talking to HAProxy: the Runtime API client, map files, and HAProxy process control.

Does:
  - ``runtime``: one persistent, pipelined Runtime API connection per target; every key,
    value and map path is checked against a strict allow-list before a byte is sent
    (the CLI has no quoting: ``;``/LF inject commands, a trailing ``<<`` hijacks the
    connection, ``#0x`` addresses another entry); upsert as ``set`` then ``add`` on
    ``entry not found.``; atomic whole-map replace (``prepare``/payload chunks that fit
    ``tune.bufsize``/``commit``); master CLI ``show proc`` for reload detection.
  - ``mapfile``: map files written atomically (temp + fsync + rename + fsync dir), so a
    reload or restart always loads the current state.
  - ``process``: find the binary, check a config, start/reload/stop a master-worker
    HAProxy by PID (tests, demo, and operators who let scimgate run HAProxy).

Does not:
  - decide what the maps contain (that is ``policy``: user + groups → map entries);
  - follow the change log, retry, coalesce or decide when to resync (that is ``sync``;
    this package reports failures as exceptions and never retries a write blindly);
  - render the HAProxy configuration.
"""

from scimgate.haproxy.runtime import (
    KEY_RE,
    MAP_PATH_RE,
    MAX_PAYLOAD_BYTES,
    VALUE_RE,
    EntryValidator,
    HAProxyRuntimeError,
    MasterProcess,
    MasterProcs,
    ReplaceResult,
    RuntimeAddress,
    RuntimeClient,
    RuntimeCommandError,
    RuntimeConnectionLost,
    RuntimeUnavailable,
    UnsafeRuntimeArgument,
    UpsertResult,
)

__all__ = [
    "KEY_RE",
    "MAP_PATH_RE",
    "MAX_PAYLOAD_BYTES",
    "VALUE_RE",
    "EntryValidator",
    "HAProxyRuntimeError",
    "MasterProcess",
    "MasterProcs",
    "ReplaceResult",
    "RuntimeAddress",
    "RuntimeClient",
    "RuntimeCommandError",
    "RuntimeConnectionLost",
    "RuntimeUnavailable",
    "UnsafeRuntimeArgument",
    "UpsertResult",
]
