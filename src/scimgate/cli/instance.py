"""`scimgate up`, `scimgate serve`, `scimgate db upgrade`: run an instance, keep its schema."""

from __future__ import annotations

from pathlib import Path

import click

from scimgate.cli.options import config_option, database_of, dir_option, settings_of
from scimgate.config import Settings


@click.command()
@dir_option
@config_option
@click.option("--host", default=None, help="Listen address (default from config, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default from config, 8000).")
@click.option(
    "--role",
    type=click.Choice(["all", "api", "agent"]),
    default="all",
    show_default=True,
    help="all: API + embedded sync engine; api: an API replica of a fleet (no engine; "
    "read-your-writes waits for the agents' nodes); agent: as `scimgate agent`.",
)
@click.option("--name", "node", default=None, help="--role agent: the node's name.")
def serve(
    directory: str | None,
    config: str | None,
    host: str | None,
    port: int | None,
    role: str,
    node: str | None,
) -> None:
    """Run the SCIM endpoint (and, in role `all`, the embedded sync engine) in the foreground.

    \b
    Examples:
      scimgate serve --dir ./demo --port 8000
      SCIMGATE_DATABASE_URL=postgresql+psycopg://scimgate@db/scimgate \\
        scimgate serve --dir ./api --role api --port 8001
    """
    from scimgate.instance.serve import SERVE_ERRORS, serve as serve_instance

    settings = settings_of(directory, config)
    if role == "agent":
        _run_agent(settings, node, None, None, None)
        return
    try:
        serve_instance(settings, host or settings.host, port or settings.port, role=role)
    except SERVE_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc


def _run_agent(
    settings: Settings,
    node: str | None,
    runtime_api: str | None,
    master_api: str | None,
    map_dir: str | None,
) -> None:
    from scimgate.config import ConfigError
    from scimgate.instance.agent import default_node_name, node_target, run_agent

    try:
        target = node_target(
            settings, node or default_node_name(), runtime_api=runtime_api,
            master_api=master_api, map_dir=map_dir,
        )  # fmt: skip
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if not settings.database_url.startswith("postgresql"):
        click.echo(
            "warning: an agent on SQLite only sees writes of this host (a fleet shares "
            "one PostgreSQL: SCIMGATE_DATABASE_URL)",
            err=True,
        )
    run_agent(settings, target)


@click.command()
@dir_option
@config_option
@click.option("--name", "node", default=None, help="This node's name (default: the host name).")
@click.option("--runtime-api", default=None, help="The local HAProxy's admin socket (unix:/path).")
@click.option("--master-api", default=None, help="The local HAProxy's master CLI (unix:/path).")
@click.option("--map-dir", default=None, help="Where the local HAProxy loads its map files.")
def agent(
    directory: str | None,
    config: str | None,
    node: str | None,
    runtime_api: str | None,
    master_api: str | None,
    map_dir: str | None,
) -> None:
    """Keep the local HAProxy equal to the shared store, beside it (one per HAProxy node).

    Follows the change log in PostgreSQL (LISTEN as a wake-up, a bounded poll as the
    guarantee), applies through the local admin socket and master CLI exactly as the
    embedded engine of `scimgate serve` does, and records its node (cursor, worker PID,
    HAProxy version, heartbeat) for read-your-writes and `scimgate status`.

    \b
    Example:
      SCIMGATE_DATABASE_URL=postgresql+psycopg://scimgate@db/scimgate \\
        scimgate agent --dir /etc/scimgate --name edge-1 \\
          --runtime-api unix:/run/haproxy/admin.sock \\
          --master-api unix:/run/haproxy/master.sock --map-dir /var/lib/haproxy/maps
    """
    _run_agent(settings_of(directory, config), node, runtime_api, master_api, map_dir)


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
    "--nodes",
    type=click.IntRange(min=1),
    default=None,
    help="A fleet: N HAProxy nodes, each with its own `scimgate agent` (docs/fleet.md).",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=None,
    help="With --nodes: M API replicas behind a load-balancing frontend (default 1).",
)
def up(
    directory: str,
    port: int | None,
    haproxy_port: int | None,
    scim_tls_port: int | None,
    no_haproxy: bool,
    nodes: int | None,
    replicas: int | None,
) -> None:
    """Bring a whole working instance up in DIR, in the foreground.

    Creates (or reuses) the config, the SQLite database, a SCIM token, the demo policy and
    keys, a demo TLS certificate, renders and starts HAProxy (the enforcing frontend and the
    SCIM endpoint's TLS frontend), starts the SCIM endpoint and the sync engine, and writes
    DIR/stack.json (scim_url, scim_public_url, scim_ca_file, token, pids, haproxy_url, ...).

    \b
    With --nodes N [--replicas M]: a fleet instead (docs/fleet.md): PostgreSQL (a throwaway
    cluster in DIR/pg unless SCIMGATE_DATABASE_URL is set), M API replicas behind a
    balancing frontend on --port, N HAProxy nodes on --haproxy-port, +1, ... each with its
    agent; stack.json lists scim_url, scim_urls, database_url, token and the nodes.

    \b
    Examples:
      scimgate up --dir ./demo
      scimgate up --dir ./fleet --nodes 3 --replicas 2
      curl --cacert "$(jq -r .scim_ca_file demo/stack.json)" \\
           -H "Authorization: Bearer $(jq -r .token demo/stack.json)" \\
           "$(jq -r .scim_public_url demo/stack.json)/Users"
    """
    from scimgate.instance.up import bring_up, startup_errors

    if nodes is not None:
        if no_haproxy or scim_tls_port is not None:
            raise click.UsageError("--nodes does not combine with --no-haproxy/--scim-tls-port")
        from scimgate.instance.up_fleet import bring_up_fleet

        try:
            bring_up_fleet(
                Path(directory), nodes=nodes, replicas=replicas or 1, port=port,
                haproxy_port=haproxy_port,
            )  # fmt: skip
        except startup_errors() as exc:
            raise click.ClickException(str(exc)) from exc
        return
    if replicas is not None:
        raise click.UsageError("--replicas needs --nodes")
    try:
        bring_up(
            Path(directory),
            port=port,
            haproxy_port=haproxy_port,
            scim_tls_port=scim_tls_port,
            with_haproxy=not no_haproxy,
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
