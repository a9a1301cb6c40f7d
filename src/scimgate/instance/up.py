"""`scimgate up --dir DIR`: one command that brings a whole working instance up.

Creates what is missing (config, database, token, demo policy and keys, HAProxy config),
reuses what exists, runs everything in the foreground and writes DIR/stack.json so that
scripts (and `make demo`) can find the URLs, the token and the PIDs.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

from scimgate.app import admins, tokens
from scimgate.config import (
    CONFIG_NAME,
    ConfigError,
    ScimFront,
    Settings,
    default_sqlite_url,
    load_settings,
    redact_url,
)
from scimgate.instance.database import open_database
from scimgate.instance.layout import DemoError, write_private
from scimgate.instance.local_haproxy import start_demo_haproxy
from scimgate.instance.serve import SERVE_ERRORS, run_server, unwind_on_signals
from scimgate.store.db import Database

TOKEN_NAME = "demo"
ADMIN_NAME = "demo-admin"  # the console's demo admin (an operator)


def ensure_token(db: Database, directory: Path) -> str:
    """Reuse DIR/token if it still authenticates; otherwise issue a fresh demo token."""
    path = directory / "token"
    if path.exists():
        secret = path.read_text().strip()
        with db.read() as conn:
            if tokens.authenticate(conn, secret).reason == "ok":
                return secret
    try:
        secret = tokens.create(db, TOKEN_NAME)
    except tokens.TokenError:
        secret = tokens.rotate(db, TOKEN_NAME, tokens.parse_duration("1s"))
    write_private(path, secret + "\n")
    return secret


def ensure_admin(db: Database, directory: Path) -> tuple[str, str]:
    """Reuse DIR/console-admin (NAME and secret, 0600) if it still signs in; otherwise issue
    a fresh demo operator."""
    path = directory / "console-admin"
    if path.exists():
        name, _, secret = path.read_text().strip().partition("\n")
        if name and admins.credential_ok(db, name, secret.strip()):
            return name, secret.strip()
    try:
        secret = admins.create(db, ADMIN_NAME, "operator")
    except admins.AdminError:
        secret = admins.rotate(db, ADMIN_NAME)
    write_private(path, f"{ADMIN_NAME}\n{secret}\n")
    return ADMIN_NAME, secret


def ensure_config(directory: Path, port: int | None, console_port: int | None = None) -> Settings:
    directory.mkdir(parents=True, exist_ok=True)
    cfg = directory / CONFIG_NAME
    if not cfg.exists():
        settings = Settings(
            base_dir=directory.resolve(),
            # The database `up` was started on (env or SQLite in DIR) is the one later
            # commands on this DIR must use, with or without the variable set.
            database_url=os.environ.get("SCIMGATE_DATABASE_URL")
            or default_sqlite_url(directory.resolve()),
            port=port or 8000,
            read_your_writes=True,
            # HAProxy's way to the SCIM endpoint (see instance.layout.Layout.scim_socket).
            unix_socket=directory.resolve() / "scimgate.sock",
            scim_front=ScimFront(),
            # The console on loopback; port 0: a free port, reported in stack.json.
            console_bind=f"127.0.0.1:{console_port or 0}",
        )
        write_private(cfg, settings.to_yaml())
    settings = load_settings(directory=directory)
    if port is not None:
        settings.port = port
    if settings.console_bind is None:
        # `up` is the whole local product: an instance made before the console existed gets
        # one too, on loopback (not written to its config; `serve` follows the config).
        settings.console_bind = "127.0.0.1:0"
    if console_port is not None:
        settings.console_bind = f"{settings.console_bind.rpartition(':')[0]}:{console_port}"
    return settings


def write_stack(directory: Path, info: dict[str, Any]) -> None:
    write_private(directory / "stack.json", json.dumps(info, indent=2) + "\n")


def startup_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix (bad policy, port taken, no haproxy): one message,
    not a traceback."""
    from scimgate.haproxy.process import HAProxyNotFound, HAProxyStartError
    from scimgate.policy.model import PolicyError
    from scimgate.policy.render import RenderError

    return (
        ConfigError, DemoError, HAProxyNotFound, HAProxyStartError, *SERVE_ERRORS, PolicyError,
        RenderError,
    )  # fmt: skip


def bring_up(
    directory: Path,
    *,
    port: int | None = None,
    haproxy_port: int | None = None,
    scim_tls_port: int | None = None,
    with_haproxy: bool = True,
    console_port: int | None = None,
) -> None:
    """The whole instance in the foreground until SIGTERM/SIGINT; raises one of
    :func:`startup_errors` when it cannot start."""
    # Before uvicorn starts (while HAProxy starts), a signal unwinds too (serve.py).
    unwind_on_signals()

    directory = directory.resolve()
    settings = ensure_config(directory, port, console_port)
    if not _is_loopback(settings.host):
        # The IdP reaches the SCIM endpoint through HAProxy's TLS frontend (scim_front); the
        # direct port is for local tools only.
        raise ConfigError(
            f"{settings.config_path}: host {settings.host!r} is not a loopback address: `up` "
            "serves the direct SCIM port on loopback only (the network gets scim_front)"
        )
    db = open_database(settings)
    secret = ensure_token(db, directory)
    admin_name, admin_password = ensure_admin(db, directory)
    db.dispose()
    info: dict[str, Any] = {
        "dir": str(directory),
        "scim_url": f"http://{settings.host}:{settings.port}/scim/v2",
        "token": secret,
        "token_file": str(directory / "token"),
        "pids": {"scimgate": os.getpid()},
        "database_url": redact_url(settings.database_url),
    }
    haproxy = None

    def started(instance: Any) -> None:
        if instance.console_url is not None:
            info.update(
                console_url=instance.console_url,
                admin_name=admin_name,
                admin_password=admin_password,
                admin_file=str(directory / "console-admin"),
            )
        write_stack(directory, info)
        print(
            json.dumps(
                {
                    "event": "scimgate up",
                    **{k: v for k, v in info.items() if k not in ("token", "admin_password")},
                }
            ),
            flush=True,
        )

    try:
        if with_haproxy:
            haproxy, extra = start_demo_haproxy(
                settings, haproxy_port=haproxy_port, scim_tls_port=scim_tls_port
            )
            info.update(extra)
            info["pids"]["haproxy"] = haproxy.pid
        run_server(settings, settings.host, settings.port, on_started=started)
    finally:
        if haproxy is not None:
            haproxy.stop()
        stack = directory / "stack.json"
        if stack.exists():
            stack.unlink()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
