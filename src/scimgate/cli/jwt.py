"""`scimgate jwt mint`: a JWT as the IdP would issue it, signed with the instance's demo key."""

from __future__ import annotations

from pathlib import Path

import click

from scimgate.cli.options import (
    config_option,
    dir_option,
    policy_file_of,
    policy_or_exit,
    settings_of,
)


@click.group("jwt")
def jwt_group() -> None:
    """Demo JWTs (what an IdP would issue), signed with the instance's demo key."""


@jwt_group.command("mint")
@click.argument("subject", required=False)
@dir_option
@config_option
@click.option("--scope", "scopes", multiple=True, help="A scope to grant (repeatable).")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 30m, 1h, 2d ...")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Signing key (default DIR/keys/jwt.key.pem; HS* policies use their secret).",
)
@click.option("--agent", default=None, help="Mint an agent's token (idtyp=app, sub=azp=AGENT).")
@click.option(
    "--on-behalf-of",
    "on_behalf_of",
    default=None,
    help="With --agent: a delegated token (RFC 8693): this user, act.sub = the agent.",
)
def jwt_mint(
    subject: str | None,
    directory: str | None,
    config: str | None,
    scopes: tuple[str, ...],
    ttl: str,
    key_file: str | None,
    agent: str | None,
    on_behalf_of: str | None,
) -> None:
    """Print a JWT for SUBJECT as the IdP would issue it.

    The identity claim (the policy's `claim`, `email` in the demo) is SUBJECT; iss and aud
    come from the policy; iat/nbf are now and exp is now + --ttl.

    \b
    Example:
      JWT=$(scimgate jwt mint --dir ./demo alice@example.com --scope read:reports)
      curl -H "Authorization: Bearer $JWT" http://127.0.0.1:8080/
      scimgate jwt mint --dir ./demo --agent ci-bot
      scimgate jwt mint --dir ./demo --agent ci-bot --on-behalf-of alice@example.com
    """
    from scimgate.instance.demo_jwt import DemoJwtError, mint_agent_jwt, mint_demo_jwt

    if (subject is None) == (agent is None):
        raise click.UsageError("give SUBJECT or --agent NAME (not both)")
    if on_behalf_of is not None and agent is None:
        raise click.UsageError("--on-behalf-of goes with --agent")
    settings = settings_of(directory, config)
    policy = policy_or_exit(policy_file_of(settings))
    if agent is not None:
        try:
            jwt = mint_agent_jwt(
                settings,
                policy,
                agent,
                on_behalf_of=on_behalf_of,
                scopes=scopes,
                ttl=ttl,
                key_file=Path(key_file) if key_file else None,
            )
        except DemoJwtError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(jwt)
        return
    assert subject is not None
    try:
        jwt = mint_demo_jwt(
            settings,
            policy,
            subject,
            scopes=scopes,
            ttl=ttl,
            key_file=Path(key_file) if key_file else None,
        )
    except DemoJwtError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(jwt)
