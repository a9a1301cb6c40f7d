"""Serving an instance: the API on its listeners (the direct TCP port, HAProxy's unix
socket) under uvicorn, with the sync engine running, until SIGTERM/SIGINT.

Does: listen, build the instance (``instance.wiring``), wrap the app in the trusted-proxy
layer (``api.forwarded``), run uvicorn with the deadline protocol (``instance.listeners``),
and unwind on a signal so that every ``finally`` runs (the engine stopped, pending failed
authentications audited, HAProxy stopped by `up`).
Does not: parse arguments (``scimgate.cli``) or handle a request (``scimgate.api``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from scimgate.config import Settings
from scimgate.instance.listeners import ListenError

# What serving can fail on that is the user's to fix (a port taken, a socket in the way).
SERVE_ERRORS: tuple[type[BaseException], ...] = (ListenError,)


class Stop(SystemExit):
    """SIGTERM/SIGINT: unwind through every `finally` (HAProxy stopped, stack.json removed)."""


def stop_on_signal(signum: int, _frame: Any) -> None:
    raise Stop(0)


def unwind_on_signals() -> None:
    """uvicorn handles SIGTERM/SIGINT while it serves, then restores these handlers and
    re-raises the signal: with the default action the process would die right there,
    skipping every `finally` (the sync engine's stop, the audit of pending failed
    authentications, HAProxy under `up`). Before uvicorn starts, the same handler unwinds."""
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)


def run_server(
    settings: Settings,
    host: str,
    port: int,
    *,
    on_started: Callable[[Any], None] | None = None,
    role: str = "all",
) -> None:
    """Serve the instance on host:port (and on ``settings.unix_socket``, HAProxy's way in,
    where forwarded headers are trusted) until SIGTERM/SIGINT."""
    import uvicorn

    from scimgate import logs
    from scimgate.api.forwarded import TrustedProxies
    from scimgate.instance.listeners import (
        ClientLimits,
        UnixListener,
        listen_tcp,
        listen_unix,
        protocol_for,
    )
    from scimgate.instance.wiring import Instance

    logs.setup(settings.log_level)
    # Listen first: no other thread exists yet (listen_unix sets the umask for a moment).
    tcp = listen_tcp(host, port)
    unix: UnixListener | None = None
    instance: Instance | None = None
    try:
        if settings.unix_socket is not None:
            unix = listen_unix(settings.unix_socket)
        instance = Instance(settings, role="api" if role == "api" else "all")
        instance.start()
        limits = ClientLimits(
            header_timeout=settings.client_header_timeout,
            body_timeout=settings.client_body_timeout,
            max_connections=settings.max_connections,
        )
        config = uvicorn.Config(
            TrustedProxies(
                instance.app,
                trusted_proxies=settings.trusted_proxies,
                trusted_sockets=[str(unix.path)] if unix is not None else [],
            ),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            # Forwarded headers are TrustedProxies' job (uvicorn's own trusts 127.0.0.1).
            proxy_headers=False,
            ws="none",
            http=protocol_for(limits),
        )
        server = uvicorn.Server(config)
        if on_started is not None:
            original = server.startup
            started_instance = instance

            async def startup(sockets: Any = None) -> None:
                await original(sockets)
                on_started(started_instance)

            server.startup = startup  # type: ignore[method-assign]
        server.run(sockets=[tcp] if unix is None else [tcp, unix.sock])
    finally:
        if instance is not None:
            instance.stop()
        tcp.close()
        if unix is not None:
            unix.close()


def serve(settings: Settings, host: str, port: int, *, role: str = "all") -> None:
    """`scimgate serve`: :func:`run_server`, unwinding on SIGTERM/SIGINT as `up` does.
    ``role``: ``all`` (API + embedded engine), ``api`` (an API replica of a fleet)."""
    unwind_on_signals()
    run_server(settings, host, port, role=role)
