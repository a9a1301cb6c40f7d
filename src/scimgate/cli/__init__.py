"""The `scimgate` command. Every subcommand takes --dir DIR (an instance made by
`scimgate up --dir DIR`) or --config FILE."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from scimgate.app import tokens
from scimgate.cli.options import config_option as _config_option
from scimgate.cli.options import database_of as _db
from scimgate.cli.options import dir_option as _dir_option
from scimgate.cli.options import settings_of as _settings
from scimgate.config import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scimgate")
def main() -> None:
    """scimgate: a SCIM 2.0 endpoint that makes HAProxy enforce what your IdP says.

    \b
    Quick start:
      scimgate up --dir ./demo      # SCIM endpoint + HAProxy with a demo policy
      scimgate token create okta --dir ./demo --expires-in 90d
    """


def run_server(settings: Settings, host: str, port: int, *, on_started: Any = None) -> None:
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
        instance = Instance(settings)
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


def _serve_errors() -> tuple[type[BaseException], ...]:
    from scimgate.instance.listeners import ListenError

    return (ListenError,)


@main.command()
@_dir_option
@_config_option
@click.option("--host", default=None, help="Listen address (default from config, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default from config, 8000).")
def serve(directory: str | None, config: str | None, host: str | None, port: int | None) -> None:
    """Run the SCIM endpoint and the embedded sync engine in the foreground.

    \b
    Example:
      scimgate serve --dir ./demo --port 8000
    """
    import signal

    from scimgate.instance.up import _stop_on_signal

    settings = _settings(directory, config)
    # As `up` does (stack.bring_up): uvicorn re-raises SIGTERM/SIGINT once it stopped, and
    # with the default action the process would die before run_server's `finally` (the
    # sync engine's stop, the audit of pending failed authentications).
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    try:
        run_server(settings, host or settings.host, port or settings.port)
    except _serve_errors() as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False),
    help="Where the instance lives (created if missing, reused if present).",
)
@click.option("--port", type=int, default=None, help="SCIM port (default 8000 or the config's).")
@click.option("--haproxy-port", type=int, default=None, help="HAProxy port (default 8080).")
@click.option(
    "--scim-tls-port",
    type=int,
    default=None,
    help="HAProxy's TLS port for the SCIM endpoint (default: scim_front.bind's, 8443).",
)
@click.option("--no-haproxy", is_flag=True, help="Run the SCIM service alone.")
def up(
    directory: str,
    port: int | None,
    haproxy_port: int | None,
    scim_tls_port: int | None,
    no_haproxy: bool,
) -> None:
    """Bring a whole working instance up in DIR, in the foreground.

    Creates (or reuses) the config, the SQLite database, a SCIM token, the demo policy and
    keys, a demo TLS certificate, renders and starts HAProxy (the enforcing frontend and the
    SCIM endpoint's TLS frontend), starts the SCIM endpoint and the sync engine, and writes
    DIR/stack.json (scim_url, scim_public_url, scim_ca_file, token, pids, haproxy_url, ...).

    \b
    Example:
      scimgate up --dir ./demo
      curl --cacert "$(jq -r .scim_ca_file demo/stack.json)" \\
           -H "Authorization: Bearer $(jq -r .token demo/stack.json)" \\
           "$(jq -r .scim_public_url demo/stack.json)/Users"
    """
    from scimgate.instance.up import bring_up

    bring_up(
        Path(directory),
        port=port,
        haproxy_port=haproxy_port,
        scim_tls_port=scim_tls_port,
        with_haproxy=not no_haproxy,
    )


@main.group()
def token() -> None:
    """Manage SCIM bearer tokens (stored only as hashes)."""


@token.command("create")
@click.argument("name")
@_dir_option
@_config_option
@click.option("--expires-in", default=None, help="Lifetime, e.g. 90d, 12h (default: none).")
def token_create(
    name: str, directory: str | None, config: str | None, expires_in: str | None
) -> None:
    """Create a token and print its secret once.

    \b
    Example:
      scimgate token create okta --dir ./demo --expires-in 90d
    """
    db = _db(_settings(directory, config))
    try:
        secret = tokens.create(db, name, tokens.parse_duration(expires_in) if expires_in else None)
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(secret)
    click.echo(f"# token {name!r} created; the secret above is shown only once", err=True)


@token.command("list")
@_dir_option
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def token_list(directory: str | None, config: str | None, as_json: bool) -> None:
    """List tokens: name, created, expires, last used, state.

    \b
    Example:
      scimgate token list --dir ./demo
    """
    rows = tokens.list_tokens(_db(_settings(directory, config)))
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    click.echo(f"{'NAME':<20} {'CREATED':<28} {'EXPIRES':<28} {'LAST USED':<28} STATE")
    for r in rows:
        state = (
            "revoked"
            if r.revoked
            else (
                f"rotating (old secret until {r.rotating_until})" if r.rotating_until else "active"
            )
        )
        click.echo(
            f"{r.name:<20} {r.created:<28} {r.expires or '-':<28} {r.last_used or '-':<28} {state}"
        )


@token.command("revoke")
@click.argument("name")
@_dir_option
@_config_option
def token_revoke(name: str, directory: str | None, config: str | None) -> None:
    """Revoke a token now (both its current and any overlapping previous secret).

    \b
    Example:
      scimgate token revoke okta --dir ./demo
    """
    try:
        tokens.revoke(_db(_settings(directory, config)), name)
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"token {name!r} revoked")


@token.command("rotate")
@click.argument("name")
@_dir_option
@_config_option
@click.option(
    "--overlap", default="24h", show_default=True, help="How long the old secret keeps working."
)
@click.option("--expires-in", default=None, help="New lifetime for the token.")
def token_rotate(
    name: str, directory: str | None, config: str | None, overlap: str, expires_in: str | None
) -> None:
    """Issue a new secret; the old one works for --overlap, then stops.

    \b
    Example:
      scimgate token rotate okta --dir ./demo --overlap 1h
    """
    try:
        secret = tokens.rotate(
            _db(_settings(directory, config)),
            name,
            tokens.parse_duration(overlap),
            tokens.parse_duration(expires_in) if expires_in else None,
        )
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(secret)
    click.echo(f"# new secret for {name!r}; the old one works for {overlap}", err=True)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@_dir_option
@_config_option
def db_upgrade(directory: str | None, config: str | None) -> None:
    """Apply schema migrations (serve and up do this on start).

    \b
    Example:
      SCIMGATE_DATABASE_URL=postgresql+psycopg://scimgate@db/scimgate scimgate db upgrade
    """
    _db(_settings(directory, config))
    click.echo("database at head")


from scimgate.cli.audit import register_audit  # noqa: E402

register_audit(main)

from scimgate.cli.enforce import register_enforce  # noqa: E402

register_enforce(main)

from scimgate.cli.sync import register_sync  # noqa: E402

register_sync(main)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
