"""`scimgate up`, `scimgate serve`, `scimgate db upgrade`: run an instance, keep its schema."""

from __future__ import annotations

from pathlib import Path

import click

from scimgate.cli.options import config_option, database_of, dir_option, settings_of


@click.command()
@dir_option
@config_option
@click.option("--host", default=None, help="Listen address (default from config, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default from config, 8000).")
def serve(directory: str | None, config: str | None, host: str | None, port: int | None) -> None:
    """Run the SCIM endpoint and the embedded sync engine in the foreground.

    \b
    Example:
      scimgate serve --dir ./demo --port 8000
    """
    from scimgate.instance.serve import SERVE_ERRORS, serve as serve_instance

    settings = settings_of(directory, config)
    try:
        serve_instance(settings, host or settings.host, port or settings.port)
    except SERVE_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
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
@click.option(
    "--console-port",
    type=int,
    default=None,
    help="The admin console's port on loopback (default: console_bind's; a free port).",
)
def up(
    directory: str,
    port: int | None,
    haproxy_port: int | None,
    scim_tls_port: int | None,
    no_haproxy: bool,
    console_port: int | None,
) -> None:
    """Bring a whole working instance up in DIR, in the foreground.

    Creates (or reuses) the config, the SQLite database, a SCIM token, the demo policy and
    keys, a demo TLS certificate, renders and starts HAProxy (the enforcing frontend and the
    SCIM endpoint's TLS frontend), starts the SCIM endpoint and the sync engine, and writes
    DIR/stack.json (scim_url, scim_public_url, scim_ca_file, token, pids, haproxy_url,
    console_url, admin_name, admin_password: a demo operator of the admin console, ...).

    \b
    Example:
      scimgate up --dir ./demo
      curl --cacert "$(jq -r .scim_ca_file demo/stack.json)" \\
           -H "Authorization: Bearer $(jq -r .token demo/stack.json)" \\
           "$(jq -r .scim_public_url demo/stack.json)/Users"
    """
    from scimgate.instance.up import bring_up, startup_errors

    try:
        bring_up(
            Path(directory),
            port=port,
            haproxy_port=haproxy_port,
            scim_tls_port=scim_tls_port,
            with_haproxy=not no_haproxy,
            console_port=console_port,
        )
    except startup_errors() as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("db")
def db_group() -> None:
    """Database maintenance."""


@db_group.command("upgrade")
@dir_option
@config_option
def db_upgrade(directory: str | None, config: str | None) -> None:
    """Apply schema migrations (serve and up do this on start).

    \b
    Example:
      SCIMGATE_DATABASE_URL=postgresql+psycopg://scimgate@db/scimgate scimgate db upgrade
    """
    database_of(settings_of(directory, config))
    click.echo("database at head")
