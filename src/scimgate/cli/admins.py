"""`scimgate admin create|list|rotate|revoke`: admin console credentials (stored only as
hashes; separate from SCIM tokens)."""

from __future__ import annotations

import json

import click

from scimgate.app import admins
from scimgate.cli.options import config_option, database_of, dir_option, settings_of


@click.group("admin")
def admin_group() -> None:
    """Manage admin console credentials (not SCIM tokens)."""


@admin_group.command("create")
@click.argument("name")
@dir_option
@config_option
@click.option(
    "--role",
    type=click.Choice(admins.ROLES),
    default="viewer",
    show_default=True,
    help="viewer: every page; operator: also rotates and revokes SCIM tokens.",
)
def admin_create(name: str, directory: str | None, config: str | None, role: str) -> None:
    """Create an admin and print their password once.

    \b
    Example:
      scimgate admin create alice --role operator --dir ./demo
    """
    db = database_of(settings_of(directory, config), create=True)
    try:
        secret = admins.create(db, name, role)
    except admins.AdminError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(secret)
    click.echo(
        f"# admin {name!r} ({role}) created; the password above is shown only once", err=True
    )


@admin_group.command("list")
@dir_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def admin_list(directory: str | None, config: str | None, as_json: bool) -> None:
    """List admins: name, role, created, last sign-in, state.

    \b
    Example:
      scimgate admin list --dir ./demo
    """
    rows = admins.list_admins(database_of(settings_of(directory, config)))
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    click.echo(f"{'NAME':<20} {'ROLE':<9} {'CREATED':<28} {'LAST SIGN-IN':<28} STATE")
    for r in rows:
        state = (
            "revoked" if r.revoked else (f"active (rotated {r.rotated})" if r.rotated else "active")
        )
        click.echo(f"{r.name:<20} {r.role:<9} {r.created:<28} {r.last_sign_in or '-':<28} {state}")


@admin_group.command("rotate")
@click.argument("name")
@dir_option
@config_option
def admin_rotate(name: str, directory: str | None, config: str | None) -> None:
    """Issue a new password; the old one and every session of NAME end at once.

    \b
    Example:
      scimgate admin rotate alice --dir ./demo
    """
    try:
        secret = admins.rotate(database_of(settings_of(directory, config)), name)
    except admins.AdminError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(secret)
    click.echo(f"# new password for {name!r}; their sessions were ended", err=True)


@admin_group.command("revoke")
@click.argument("name")
@dir_option
@config_option
def admin_revoke(name: str, directory: str | None, config: str | None) -> None:
    """Revoke an admin now (their sessions end at their next request).

    \b
    Example:
      scimgate admin revoke alice --dir ./demo
    """
    try:
        admins.revoke(database_of(settings_of(directory, config)), name)
    except admins.AdminError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"admin {name!r} revoked")
