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
import socket
from collections.abc import Callable
from typing import Any

from scimgate.config import Settings
from scimgate.instance.listeners import ListenError


class ByListener:
    """The console on its own listener, the SCIM API on the others: a request is routed by
    the local address it arrived on, so neither app is reachable through the other's
    socket."""

    def __init__(self, api: Any, console: Any, console_address: tuple[str, int]) -> None:
        self.api, self.console, self.console_address = api, console, console_address

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        server = scope.get("server")
        on_console = server is not None and (server[0], server[1]) == self.console_address
        await (self.console if on_console else self.api)(scope, receive, send)


def console_url(address: tuple[str, int]) -> str:
    host, port = address
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/console/"


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
    from scimgate.config import parse_bind
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
    console: socket.socket | None = None
    instance: Instance | None = None
    try:
        if settings.unix_socket is not None:
            unix = listen_unix(settings.unix_socket)
        if settings.console_bind is not None:
            console = listen_tcp(*parse_bind(settings.console_bind, allow_any_port=True))
        instance = Instance(settings, role="api" if role == "api" else "all")
        app: Any = instance.app
        if console is not None and instance.console_app is not None:
            address = console.getsockname()[:2]
            app = ByListener(instance.app, instance.console_app, address)
            instance.console_url = console_url(address)
        instance.start()
        limits = ClientLimits(
            header_timeout=settings.client_header_timeout,
            body_timeout=settings.client_body_timeout,
            max_connections=settings.max_connections,
        )
        config = uvicorn.Config(
            TrustedProxies(
                app,
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
        sockets = [tcp] + ([unix.sock] if unix is not None else [])
        server.run(sockets=sockets + ([console] if console is not None else []))
    finally:
        if instance is not None:
            instance.stop()
        tcp.close()
        if console is not None:
            console.close()
        if unix is not None:
            unix.close()


def serve(settings: Settings, host: str, port: int, *, role: str = "all") -> None:
    """`scimgate serve`: :func:`run_server`, unwinding on SIGTERM/SIGINT as `up` does.
    ``role``: ``all`` (API + embedded engine), ``api`` (an API replica of a fleet; it serves
    the console too when ``console_bind`` is set). An agent serves no HTTP (`scimgate agent`).

    As `up` does, every entry is recomputed first under the current policy and pseudonym
    secret (only differences are logged and audited as ``policy.apply``): an edited policy or
    a rotated ``hmac.key`` takes effect at this start, and the start-up resync brings every
    HAProxy to it."""
    unwind_on_signals()
    if settings.policy_file is not None:
        from scimgate.app.enforcement import apply_policy
        from scimgate.instance.database import open_database
        from scimgate.instance.layout import hmac_secret_path, load_or_create_secret
        from scimgate.policy.model import load_policy

        db = open_database(settings)
        try:
            apply_policy(
                db,
                load_policy(settings.policy_file),
                load_or_create_secret(hmac_secret_path(settings)),
                settings.policy_file,
            )
        finally:
            db.dispose()
    follower = None
    if role == "all" and settings.policy_file is not None:
        # identity.jwt.jwks: follow the issuer's keys for the targets (instance.jwks_serve)
        from scimgate.instance.jwks_serve import start_serve_follower
        from scimgate.policy.model import load_policy

        follower = start_serve_follower(settings, load_policy(settings.policy_file))
    try:
        run_server(settings, host, port, role=role)
    finally:
        if follower is not None:
            follower.stop()
            follower.db.dispose()
