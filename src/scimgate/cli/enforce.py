"""Enforcement commands: `scimgate policy check`, `scimgate haproxy render`, `scimgate jwt mint`.

Registered on the main `scimgate` group by :func:`register_enforce`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal, cast

import click
import yaml

from scimgate.cli.options import config_option as _config_option
from scimgate.cli.options import dir_option as _dir_option
from scimgate.cli.options import settings_of as _settings
from scimgate.config import Settings


def _policy_file(settings: Settings) -> Path:
    from scimgate.instance.local_haproxy import policy_path

    path = policy_path(settings)
    if not path.exists():
        raise click.ClickException(
            f"no policy file: {path} does not exist (set policy_file in {settings.config_path}, "
            "or run `scimgate up --dir DIR` once to get the demo policy)"
        )
    return path


def _load_policy(path: Path) -> Any:
    from scimgate.policy.model import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(f"{problem}", err=True)
        click.echo(f"{path}: {len(exc.problems)} error(s)", err=True)
        raise SystemExit(1) from None


def _node_mark(path: Path, keys: tuple[str, ...]) -> tuple[int, int]:
    """Line and column of a key in a YAML file (best effort; (0, 0) when not found)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return 0, 0
    mark = (0, 0)
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return mark
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                mark, node = (v.start_mark.line + 1, v.start_mark.column + 1), v
                break
        else:
            return mark
    return mark


# ---------------------------------------------------------------------------------------------


@click.group("policy")
def policy_group() -> None:
    """Policy file tools."""


@policy_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@_dir_option
@_config_option
def policy_check(file: str | None, directory: str | None, config: str | None) -> None:
    """Validate a policy file: print every problem as FILE:LINE:COLUMN: message.

    Checks the YAML, every field, cross-references (undefined groups, unreachable routes) and
    the files it points at (the JWT public key must be a PUBLIC KEY PEM). Exit status 1 when
    anything is wrong.

    \b
    Examples:
      scimgate policy check --dir ./demo
      scimgate policy check ./policy.yaml
    """
    from scimgate.policy.model import ANY_GROUP
    from scimgate.policy.render import RenderError, render_config

    path = Path(file) if file else _policy_file(_settings(directory, config))
    policy = _load_policy(path)
    try:  # the files the policy points at (JWT public key, mTLS certificates)
        render_config(
            policy,
            mode="fragment",
            map_dir="/nonexistent",
            hmac_secret_b64="c2NpbWdhdGUtcG9saWN5LWNoZWNr",
            check_files=True,
        )
    except RenderError as exc:
        message = str(exc)
        if "mTLS server certificate" in message:
            keys: tuple[str, ...] = ("identity", "mtls", "server_cert")
        elif "mTLS CA" in message:
            keys = ("identity", "mtls", "ca_file")
        else:
            keys = ("identity", "jwt", "public_key")
        line, col = _node_mark(path, keys)
        where = f"{path}:{line}:{col}" if line else str(path)
        click.echo(f"{where}: {message}", err=True)
        click.echo(f"{path}: 1 error(s)", err=True)
        raise SystemExit(1) from None
    groups = ", ".join(policy.groups) or "none"
    click.echo(
        f"{path}: OK ({policy.identity.source} identity, {len(policy.groups)} group(s): "
        f"{groups}; {len(policy.routes)} route(s))"
    )
    for route in policy.routes:
        hosts = ",".join(route.from_.hosts)
        if route.public:
            allowed = "public (no identity)"
        elif route.allow_sources:
            allowed = "sources " + " ".join(route.allow_sources) + " (no identity)"
        elif ANY_GROUP in route.allow_groups:
            allowed = "any active user"
        else:
            allowed = " or ".join(route.allow_groups)
        scopes = f" + scopes {' '.join(route.require_scopes)}" if route.require_scopes else ""
        click.echo(f"  {route.name:<12} {hosts} {route.from_.path_prefix:<14} {allowed}{scopes}")


# ---------------------------------------------------------------------------------------------


@click.group("haproxy")
def haproxy_group() -> None:
    """HAProxy configuration."""


def _haproxy_check(
    settings: Settings, policy: Any, shards: int, bind: str | None
) -> tuple[bool, str]:
    """`haproxy -c` on the full config, rendered again with empty map files in a scratch
    directory (the instance's own map files may not exist yet)."""
    from scimgate.haproxy.process import check_config
    from scimgate.instance.local_haproxy import render_instance, write_map_files

    with tempfile.TemporaryDirectory(prefix="scimgate-check-") as scratch:
        maps = Path(scratch) / "maps"
        write_map_files(maps, {}, shards)
        cfg = Path(scratch) / "haproxy.cfg"
        cfg.write_text(
            render_instance(settings, policy, shards=shards, bind=bind, map_dir=str(maps))
        )
        return check_config(cfg)


@haproxy_group.command("render")
@_dir_option
@_config_option
@click.option(
    "--mode",
    type=click.Choice(["full", "fragment", "scim"]),
    default="full",
    show_default=True,
    help="full: a complete haproxy.cfg (with the SCIM endpoint's frontend when scim_front is "
    "set); fragment: rules to include in your frontend; scim: the SCIM endpoint's frontend "
    "and backend alone.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write here (mode 0600: it holds the pseudonym secret) instead of stdout.",
)
@click.option("--bind", default=None, help="Listen address of the full config (127.0.0.1:8080).")
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Run `haproxy -c` on a full config when the binary is present.",
)
def haproxy_render(
    directory: str | None,
    config: str | None,
    mode: str,
    output: str | None,
    bind: str | None,
    check: bool,
) -> None:
    """Render the HAProxy configuration that enforces the instance's policy.

    Uses the instance's policy, pseudonym secret, map directory and shard layout and the
    sockets of its `local` target, so the output matches what the sync engine updates. With
    `scim_front:` in scimgate.yaml it also renders the SCIM endpoint's TLS frontend (timeouts,
    body limits, rate limit, allowed sources).

    \b
    Examples:
      scimgate haproxy render --dir ./demo -o /etc/haproxy/haproxy.cfg
      scimgate haproxy render --dir ./demo --mode fragment > scimgate-rules.cfg
      scimgate haproxy render --dir ./demo --mode scim > scimgate-scim.cfg
    """
    from scimgate.haproxy.process import HAProxyNotFound, find_haproxy
    from scimgate.instance.local_haproxy import DemoError, choose_map_shards, render_instance
    from scimgate.policy.render import RenderError

    settings = _settings(directory, config)
    policy = _load_policy(_policy_file(settings))
    try:
        shards = choose_map_shards(settings)
        text = render_instance(
            settings,
            policy,
            mode=cast(Literal["full", "fragment", "scim"], mode),
            bind=bind,
            shards=shards,
        )
    except (RenderError, DemoError, HAProxyNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    if output:
        out = Path(output)
        tmp = out.with_name(out.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(out)
        click.echo(f"wrote {out} ({mode})", err=True)
    else:
        sys.stdout.write(text)
    if mode == "full" and check:
        try:
            find_haproxy()
        except HAProxyNotFound:
            click.echo("haproxy not found: skipped `haproxy -c`", err=True)
            return
        ok, detail = _haproxy_check(settings, policy, shards, bind)
        if not ok:
            click.echo(f"haproxy -c: INVALID\n{detail}", err=True)
            raise SystemExit(1)
        click.echo("haproxy -c: configuration is valid", err=True)


# ---------------------------------------------------------------------------------------------


@click.group("jwt")
def jwt_group() -> None:
    """Demo JWTs (what an IdP would issue), signed with the instance's demo key."""


@jwt_group.command("mint")
@click.argument("subject")
@_dir_option
@_config_option
@click.option("--scope", "scopes", multiple=True, help="A scope to grant (repeatable).")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 30m, 1h, 2d ...")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Signing key (default DIR/keys/jwt.key.pem; HS* policies use their secret).",
)
def jwt_mint(
    subject: str,
    directory: str | None,
    config: str | None,
    scopes: tuple[str, ...],
    ttl: str,
    key_file: str | None,
) -> None:
    """Print a JWT for SUBJECT as the IdP would issue it.

    The identity claim (the policy's `claim`, `email` in the demo) is SUBJECT; iss and aud
    come from the policy; iat/nbf are now and exp is now + --ttl.

    \b
    Example:
      JWT=$(scimgate jwt mint --dir ./demo alice@example.com --scope read:reports)
      curl -H "Authorization: Bearer $JWT" http://127.0.0.1:8080/
    """
    from scimgate.app import tokens
    from scimgate.instance.local_haproxy import Layout
    from scimgate.policy.jwtmint import mint_jwt
    from scimgate.policy.model import HMAC_ALGORITHMS

    settings = _settings(directory, config)
    policy = _load_policy(_policy_file(settings))
    jwt = policy.identity.jwt
    if policy.identity.source != "jwt" or jwt is None:
        raise click.ClickException(
            f"the policy's identity source is {policy.identity.source!r}, not 'jwt'"
        )
    try:
        seconds = int(tokens.parse_duration(ttl).total_seconds())
    except tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    if jwt.algorithm in HMAC_ALGORITHMS and key_file is None:
        key: str = jwt.secret or ""
    else:
        path = Path(key_file) if key_file else Layout(settings.base_dir).private_key
        try:
            key = path.read_text()
        except OSError as exc:
            raise click.ClickException(f"cannot read signing key {path}: {exc}") from exc
    extra = {jwt.scope_claim: " ".join(scopes)} if scopes and jwt.scope_claim != "scope" else None
    click.echo(
        mint_jwt(
            key,
            subject_claim=jwt.claim,
            identity=subject,
            algorithm=jwt.algorithm,
            issuer=jwt.issuer,
            audience=jwt.audience,
            scopes=scopes,
            ttl_seconds=seconds,
            extra=extra,
        )
    )


def register_enforce(main: click.Group) -> None:
    """Add the enforcement command groups to the `scimgate` command."""
    for group in (policy_group, haproxy_group, jwt_group):
        if group.name not in main.commands:
            main.add_command(group)
