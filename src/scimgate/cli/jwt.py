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


@jwt_group.command("keys")
@dir_option
@config_option
@click.option("--refresh", is_flag=True, help="Fetch the JWKS now (audited as jwt.keys).")
def jwt_keys(directory: str | None, config: str | None, refresh: bool) -> None:
    """The issuer's keys held for `identity.jwt.jwks` (DIR/keys/jwks), fetched first with
    --refresh. `scimgate up` and `scimgate serve` follow the JWKS themselves (serve reloads
    the targets that declare config_file and master_api); for another HAProxy, run this with
    --refresh, then `scimgate haproxy render` and reload HAProxy.

    Exit status 1 when the policy uses no JWKS or the last fetch failed.

    \b
    Example:
      $ scimgate jwt keys --dir ./demo --refresh
      JWT KEYS (from https://example.okta.com/oauth2/default/v1/keys)
      KID   ALG    SIZE       FIRST SEEN            AGE  STATE
      k1    RS256  2048 bits  2026-12-03T13:02:11Z  2h   listed
    """
    from scimgate.cli.options import database_of
    from scimgate.instance.haproxy_config import key_store
    from scimgate.instance.jwks_follower import audit_rotation, key_table

    settings = settings_of(directory, config)
    store = key_store(settings, policy_or_exit(policy_file_of(settings)))
    if store is None:
        raise click.ClickException("the policy takes no keys from a JWKS (identity.jwt.jwks)")
    if refresh:
        state, rotation = store.refresh()
        db = database_of(settings)
        try:
            audit_rotation(db, state, rotation, initial=False)
        finally:
            db.dispose()
    for line in key_table(store):
        click.echo(line)
    raise SystemExit(1 if store.load().last_error else 0)
