"""`scimgate haproxy render`: the HAProxy configuration that enforces the instance's policy."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import cast

import click

from scimgate.cli.options import config_option, dir_option, policy_file_of, policy_or_exit
from scimgate.cli.options import settings_of as _settings


@click.group("haproxy")
def haproxy_group() -> None:
    """HAProxy configuration."""


@haproxy_group.command("render")
@dir_option
@config_option
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
    from scimgate.instance.haproxy_config import (
        RenderMode,
        check_rendered,
        choose_map_shards,
        render_instance,
    )
    from scimgate.instance.layout import DemoError
    from scimgate.policy.render import RenderError

    settings = _settings(directory, config)
    policy = policy_or_exit(policy_file_of(settings))
    try:
        shards = choose_map_shards(settings)
        text = render_instance(
            settings, policy, mode=cast(RenderMode, mode), bind=bind, shards=shards
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
        ok, detail = check_rendered(settings, policy, shards, bind)
        if not ok:
            click.echo(f"haproxy -c: INVALID\n{detail}", err=True)
            raise SystemExit(1)
        click.echo("haproxy -c: configuration is valid", err=True)
