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
def serve(directory: str | None, config: str | None, host: str | None, port: int | None) -> None:
    """Run the SCIM endpoint and the embedded sync engine in the foreground.

    \b
    Example:
      scimgate serve --dir ./demo --port 8000
    """
    from scimgate.instance.serve import serve as serve_instance
    from scimgate.instance.up import startup_errors

    settings = settings_of(directory, config, existing=False)
    try:
        serve_instance(settings, host or settings.host, port or settings.port)
    except startup_errors() as exc:
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
    database_of(settings_of(directory, config), create=True)
    click.echo("database at head")


@click.command("init")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False),
    help="The instance directory to make (created if missing; never overwritten).",
)
@click.option("--port", type=int, default=8000, show_default=True, help="scimgate's direct port.")
@click.option(
    "--bind", default="127.0.0.1:8080", show_default=True, help="HAProxy's enforcing frontend."
)
@click.option(
    "--scim-bind", default="0.0.0.0:8443", show_default=True, help="HAProxy's TLS port for SCIM."
)
@click.option(
    "--certificate",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="TLS certificate chain + key (one PEM) for the SCIM frontend (default: DIR/tls/scim.pem, "
    "to be installed).",
)
@click.option("--runtime-socket", type=click.Path(), default=None, help="HAProxy's Runtime API.")
@click.option("--master-socket", type=click.Path(), default=None, help="HAProxy's master CLI.")
@click.option("--map-dir", type=click.Path(), default=None, help="Where HAProxy loads maps from.")
@click.option("--database-url", default=None, help="Default: SQLite in DIR.")
@click.option(
    "--backend",
    default="127.0.0.1:8081",
    show_default=True,
    help="The application HAProxy protects (host:port).",
)
@click.option("--issuer", default="https://idp.example.com/", show_default=True)
@click.option("--audience", default="my-app", show_default=True)
@click.option(
    "--jwt-public-key",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Your IdP's PUBLIC KEY PEM (default: a stand-in key pair in DIR/keys).",
)
def init(directory: str, **options: object) -> None:
    """Write a production instance for an HAProxy you run yourself; start nothing.

    A commented scimgate.yaml (database, TLS front, trusted proxies, one target with its
    Runtime API socket, master CLI and map directory) and policy.yaml, the pseudonym
    secret and keys in 0600 files, and the empty map files HAProxy loads at start. Prints
    the commands to run next. Socket and map paths default to DIR/haproxy/.

    \b
    Example:
      scimgate init --dir /etc/scimgate --certificate /etc/ssl/private/scim.pem \\
          --runtime-socket /run/haproxy/admin.sock --master-socket /run/haproxy/master.sock \\
          --map-dir /var/lib/scimgate/maps
    """
    from scimgate.config import ConfigError
    from scimgate.instance.init import InitChoices, InitError, init_instance
    from scimgate.policy.model import PolicyError

    paths = {k: Path(v) for k, v in options.items() if isinstance(v, str) and k in _PATH_OPTIONS}
    rest = {k: v for k, v in options.items() if k not in _PATH_OPTIONS and v is not None}
    try:
        result = init_instance(InitChoices(directory=Path(directory), **paths, **rest))  # type: ignore[arg-type]
    except (InitError, ConfigError, PolicyError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    maps = [p for p in result.files if p.suffix == ".map"]
    for path in result.files:
        if path not in maps:
            click.echo(f"wrote {path}", err=True)
    if maps:
        click.echo(f"wrote {len(maps)} empty map files in {maps[0].parent}", err=True)
    click.echo("next:")
    for number, step in enumerate(result.next_steps, 1):
        click.echo(f"  {number}. {step}")


_PATH_OPTIONS = frozenset(
    {"certificate", "runtime_socket", "master_socket", "map_dir", "jwt_public_key"}
)


@db_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@dir_option
@config_option
def db_backup(file: str, directory: str | None, config: str | None) -> None:
    """Copy the SQLite database consistently while scimgate runs (file mode 0600).

    Back up hmac.key and keys/ with it (docs/production.md). PostgreSQL: pg_dump -Fc.

    \b
    Example:
      scimgate db backup --dir /etc/scimgate /backup/scimgate-$(date +%F).db
    """
    from scimgate.app.restore import RestoreError, backup_sqlite, sqlite_file

    settings = settings_of(directory, config)
    try:
        head = backup_sqlite(sqlite_file(settings.database_url), Path(file))
    except RestoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"backed up to {file}: audit head {head.seq}:{head.hash}")


@db_group.command("restore")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@dir_option
@config_option
@click.option(
    "--record-only",
    is_flag=True,
    help="The database was restored by other means (pg_restore): only record it.",
)
@click.option(
    "--replaced-head",
    default=None,
    help="SEQ:HASH of the chain before the restore (with --record-only; from `audit verify`).",
)
def db_restore(
    file: str | None,
    directory: str | None,
    config: str | None,
    record_only: bool,
    replaced_head: str | None,
) -> None:
    """Restore an older SQLite backup in place, and record it in the audit trail.

    Stop scimgate first. The backup's chain is checked, the replaced database is kept as
    NAME.replaced-TIME, and a `db.restore` event names the restored and the replaced heads.
    At its next start, scimgate resyncs every HAProxy to the restored state.

    \b
    Example:
      scimgate db restore --dir /etc/scimgate /backup/scimgate-2026-12-01.db
    """
    from scimgate.app.restore import Head, RestoreError, record_restore, restore_sqlite

    settings = settings_of(directory, config)
    serving = _serving(settings)
    if serving:
        raise click.ClickException(f"scimgate is serving this instance ({serving}): stop it first")
    try:
        if record_only:
            seq = record_restore(
                database_of(settings),
                backup=Path(file) if file else None,
                replaced=Head.parse(replaced_head) if replaced_head else None,
                replaced_file=None,
            )
            click.echo(f"recorded the restore as audit event {seq} (db.restore)")
            return
        if file is None:
            raise click.UsageError("FILE (the backup to restore) is required")
        result = restore_sqlite(
            settings.database_url, Path(file), sqlite_synchronous=settings.sqlite_synchronous
        )
    except RestoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"restored {file}: audit head {result.restored.seq} -> chain continues at event "
        f"{result.event_seq} (db.restore)"
    )
    if result.replaced_file is not None and result.replaced is not None:
        click.echo(f"replaced database kept as {result.replaced_file} (head {result.replaced.seq})")


def _serving(settings: Settings) -> str | None:
    """What answers for this instance (its unix socket or its direct port), if anything."""
    import socket

    if settings.unix_socket is not None and settings.unix_socket.exists():
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            try:
                s.connect(str(settings.unix_socket))
                return f"{settings.unix_socket} answers"
            except OSError:
                pass
    try:
        socket.create_connection((settings.host, settings.port), timeout=1).close()
        return f"{settings.host}:{settings.port} answers"
    except OSError:
        return None
