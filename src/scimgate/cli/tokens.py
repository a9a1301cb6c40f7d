"""`scimgate token create|list|rotate|revoke`: SCIM bearer tokens (stored only as hashes)."""

from __future__ import annotations

import json

import click

from scimgate.app import tokens
from scimgate.cli.options import config_option, database_of, dir_option, settings_of


@click.group("token")
def token_group() -> None:
    """Manage SCIM bearer tokens (stored only as hashes)."""


@token_group.command("create")
@click.argument("name")
@dir_option
@config_option
@click.option("--expires-in", default=None, help="Lifetime, e.g. 90d, 12h (default: none).")
def token_create(
    name: str, directory: str | None, config: str | None, expires_in: str | None
) -> None:
    """Create a token and print its secret once.

    \b
    Example:
      scimgate token create okta --dir ./demo --expires-in 90d
    """
    db = database_of(settings_of(directory, config), create=True)
    try:
        secret = tokens.create(db, name, tokens.parse_duration(expires_in) if expires_in else None)
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(secret)
    click.echo(f"# token {name!r} created; the secret above is shown only once", err=True)


@token_group.command("list")
@dir_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def token_list(directory: str | None, config: str | None, as_json: bool) -> None:
    """List tokens: name, created, expires, last used, state.

    \b
    Example:
      scimgate token list --dir ./demo
    """
    rows = tokens.list_tokens(database_of(settings_of(directory, config)))
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


@token_group.command("revoke")
@click.argument("name")
@dir_option
@config_option
def token_revoke(name: str, directory: str | None, config: str | None) -> None:
    """Revoke a token now (both its current and any overlapping previous secret).

    \b
    Example:
      scimgate token revoke okta --dir ./demo
    """
    try:
        tokens.revoke(database_of(settings_of(directory, config)), name)
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"token {name!r} revoked")


@token_group.command("rotate")
@click.argument("name")
@dir_option
@config_option
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
            database_of(settings_of(directory, config)),
            name,
            tokens.parse_duration(overlap, allow_zero=True),
            tokens.parse_duration(expires_in) if expires_in else None,
        )
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(secret)
    click.echo(f"# new secret for {name!r}; the old one works for {overlap}", err=True)
