"""`scimgate haproxy render`: the HAProxy configuration that enforces the instance's policy."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from scimgate.cli.options import (
    config_option,
    dir_option,
    policy_file_of,
    policy_or_exit,
    settings_of,
)

if TYPE_CHECKING:
    from scimgate.config import Settings
    from scimgate.policy.model import Policy


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
    help="Write here (mode 0600: it holds the pseudonym secret). A full config goes only to a "
    "file; a fragment or the SCIM frontend (no secret in them) go to stdout without -o.",
)
@click.option(
    "--target",
    "target_name",
    default=None,
    help="Render for this target of scimgate.yaml: its sockets, map_dir and bind "
    "(default: the `local` target, or the first).",
)
@click.option(
    "--bind",
    default=None,
    help="Listen address of the full config (default: the target's bind, else 127.0.0.1:8080).",
)
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
    target_name: str | None,
    bind: str | None,
    check: bool,
) -> None:
    """Render the HAProxy configuration that enforces the instance's policy.

    Uses the instance's policy, pseudonym secret, map directory and shard layout and the
    sockets, map directory and bind of its `local` target (or of --target NAME), so the output
    matches what the sync engine updates. With `scim_front:` in scimgate.yaml it also renders
    the SCIM endpoint's TLS frontend (timeouts, body limits, rate limit, allowed sources).
    A full config holds the pseudonym secret: it is written only to -o FILE (mode 0600), never
    to stdout. A fragment names the secret's file instead of printing it. With keys from a
    JWKS (identity.jwt.jwks), name the file as the target's `config_file` in scimgate.yaml:
    `scimgate serve` then renders it again and reloads HAProxy (master_api) on a key change.

    \b
    Examples:
      scimgate haproxy render --dir ./demo -o /etc/haproxy/haproxy.cfg
      scimgate haproxy render --dir ./demo --target edge2 -o /etc/haproxy/edge2.cfg
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

    settings = settings_of(directory, config)
    policy = policy_or_exit(policy_file_of(settings))
    if mode == "full" and not output:
        raise click.UsageError(
            "a full config holds the pseudonym secret: write it to a file with -o FILE "
            "(created mode 0600), not to stdout"
        )
    try:
        shards = choose_map_shards(settings)
        text = render_instance(
            settings,
            policy,
            mode=cast(RenderMode, mode),
            bind=bind,
            shards=shards,
            target_name=target_name,
        )
    except (RenderError, DemoError, HAProxyNotFound) as exc:
        raise click.ClickException(str(exc)) from exc
    if output:
        out = Path(output)
        tmp = out.with_name(out.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # O_EXCL below: the mode is 0600 from the first byte, whatever was there
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        tmp.replace(out)
        click.echo(f"wrote {out} ({mode})", err=True)
        if mode == "full":
            _rendered_keys(settings, policy, target_name)
    else:
        sys.stdout.write(text)
    if mode == "full" and check:
        try:
            find_haproxy()
        except HAProxyNotFound:
            click.echo("haproxy not found: skipped `haproxy -c`", err=True)
            return
        ok, detail = check_rendered(settings, policy, shards, bind, target_name)
        if not ok:
            click.echo(f"haproxy -c: INVALID\n{detail}", err=True)
            raise SystemExit(1)
        click.echo("haproxy -c: configuration is valid", err=True)


def _rendered_keys(settings: Settings, policy: Policy, target_name: str | None) -> None:
    """A full config for the target now holds the current JWKS keys: it no longer waits for
    a reload by hand after `serve` saw a rotation (once this file is loaded)."""
    from scimgate.instance.haproxy_config import key_store, render_target

    store = key_store(settings, policy)
    target = render_target(settings, target_name)
    if store is None or target is None or target.name not in store.reload_needed():
        return
    store.clear_reload_needed(target.name)
    click.echo(f"JWT keys: reload HAProxy (target {target.name}) to load them", err=True)
