"""The local HAProxy of `scimgate up --dir DIR`: its files prepared from the instance
directory (demo policy and keys, certificate, config, map files from the store's desired
state), then the process started (master-worker, loopback) and stopped.

Does: put together what ``instance.layout`` and ``instance.haproxy_config`` make, apply the
policy to the store first (``app.enforcement.apply_policy``), run `haproxy -c`, start and
stop the process (``haproxy.process``).
Does not: render config text (``policy.render``) or talk to the Runtime API (the sync
engine does, once the instance serves).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from scimgate.app.enforcement import apply_policy
from scimgate.config import UNIX_PATH_MAX, Settings, parse_bind
from scimgate.haproxy.connection import RuntimeAddress
from scimgate.haproxy.process import HAProxyProcess, binary_version, check_config, find_haproxy
from scimgate.instance.database import open_database
from scimgate.instance.haproxy_config import (
    DEFAULT_BIND,
    choose_map_shards,
    key_store,
    public_scim_url,
    render_instance,
    scim_ca_file,
    write_map_files,
)
from scimgate.instance.jwks_follower import KeyFollower, audit_rotation, read_kid_misses
from scimgate.instance.layout import (
    TARGET_NAME,
    DemoError,
    Layout,
    ensure_demo_certificate,
    ensure_demo_keys,
    ensure_demo_policy,
    hmac_secret_path,
    load_or_create_secret,
    persist_settings,
    write_private,
)
from scimgate.policy.model import load_policy


def _stop_leftover(layout: Layout) -> None:
    """An HAProxy a previous, killed `up` left running on this directory's config: stop it
    (only if its command line names our config file, so a recycled PID is never hit)."""
    try:
        pid = int(layout.pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if not cmdline or b"haproxy" not in cmdline[0] or str(layout.config).encode() not in cmdline:
        return
    print(f"stopping HAProxy left over from a previous run (pid {pid})", flush=True)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def prepare_haproxy(
    settings: Settings, *, haproxy_port: int | None = None, scim_tls_port: int | None = None
) -> tuple[Layout, dict[str, Any]]:
    """Everything up to (not including) starting HAProxy; updates ``settings`` in place
    (``scim_tls_port`` replaces scim_front.bind's port for this run only)."""
    layout = Layout(settings.base_dir.resolve())
    binary = find_haproxy()
    for sock in (layout.admin_socket, layout.master_socket, layout.scim_socket):
        if len(str(sock).encode()) > UNIX_PATH_MAX:
            raise DemoError(
                f"socket path too long for a unix socket ({len(str(sock))} > "
                f"{UNIX_PATH_MAX} bytes): {sock}; use a shorter --dir"
            )
    ensure_demo_keys(layout)
    policy_file = ensure_demo_policy(settings)
    policy = load_policy(policy_file)
    secret = load_or_create_secret(hmac_secret_path(settings))
    shards = choose_map_shards(settings, binary)
    # --haproxy-port is remembered (the local target's bind), so that a later
    # `haproxy render --dir DIR` renders the port this instance runs on.
    local = next((t for t in settings.targets if t.name == TARGET_NAME), None)
    if haproxy_port is not None:
        bind = f"127.0.0.1:{haproxy_port}"
    else:
        bind = local.bind if local is not None and local.bind else DEFAULT_BIND
    persist_settings(settings, layout, policy_file.resolve(), shards, bind)

    front = settings.scim_front
    if front is not None and scim_tls_port is not None:
        host = parse_bind(front.bind)[0]
        front.bind = f"[{host}]:{scim_tls_port}" if ":" in host else f"{host}:{scim_tls_port}"
    if front is not None and front.certificate is None:
        ensure_demo_certificate(layout, parse_bind(front.bind)[0])
    db = open_database(settings)
    try:
        entries = apply_policy(db, policy, secret, policy_file.resolve())
        store = key_store(settings, policy)
        if store is not None:
            # the issuer's keys before the first config (a failed fetch keeps the keys of
            # the last run; with none, every token is refused until a fetch succeeds)
            state, rotation = store.refresh()
            audit_rotation(db, state, rotation, initial=True)
            if state.last_error:
                print(f"warning: JWKS not fetched: {state.last_error}", flush=True)
    finally:
        db.dispose()
    write_map_files(layout.maps, entries, shards)
    text = render_instance(settings, policy, bind=bind, shards=shards)
    write_private(layout.config, text)
    ok, output = check_config(layout.config, binary)
    if not ok:
        raise DemoError(f"haproxy -c rejected {layout.config}:\n{output}")
    info: dict[str, Any] = {
        "haproxy_url": f"http://{bind}",
        "runtime_api": f"unix:{layout.admin_socket}",
        "master_api": f"unix:{layout.master_socket}",
        "haproxy_config": str(layout.config),
        "haproxy_binary": binary,
        "haproxy_version": ".".join(map(str, binary_version(binary))),
        "haproxy_log": str(layout.log),
        "map_dir": str(layout.maps),
        "map_shards": shards,
        "policy_file": str(policy_file.resolve()),
        "jwt_private_key": str(layout.private_key),
        "jwt_public_key": str(layout.public_key),
        "identities": len(entries),
    }
    if front is not None:
        ca = scim_ca_file(settings)
        info["scim_public_url"] = public_scim_url(front)
        info["scim_ca_file"] = str(ca) if ca is not None else None
    if settings.unix_socket is not None:
        info["scim_socket"] = str(settings.unix_socket)
    return layout, info


def start_demo_haproxy(
    settings: Settings, *, haproxy_port: int | None = None, scim_tls_port: int | None = None
) -> tuple[HAProxyProcess, dict[str, Any]]:
    """Prepare the instance's HAProxy files and start HAProxy (master-worker, loopback).

    Returns the running process (stop it with ``.stop()``) and the keys to add to
    stack.json. The caller must stop it even if anything after this call fails."""
    layout, info = prepare_haproxy(settings, haproxy_port=haproxy_port, scim_tls_port=scim_tls_port)
    _stop_leftover(layout)
    proc = HAProxyProcess(
        layout.config,
        layout.master_socket,
        binary=info["haproxy_binary"],
        pid_file=layout.pid_file,
        log_path=layout.log,
        stats_socket=f"unix:{layout.admin_socket}",
    )
    proc.start()  # stops what it started if it does not become ready
    return proc, info


def start_key_follower(
    settings: Settings, proc: HAProxyProcess, info: dict[str, Any]
) -> KeyFollower | None:
    """The JWKS follower of `up`'s HAProxy (None unless the policy takes keys from a JWKS):
    on a key change it renders the config again, checks it with `haproxy -c`, replaces it
    atomically and reloads HAProxy hitlessly through the master CLI."""
    policy = load_policy(info["policy_file"])
    store = key_store(settings, policy)
    if store is None:
        return None
    layout = Layout(settings.base_dir.resolve())
    bind = info["haproxy_url"].removeprefix("http://")

    def apply() -> None:
        text = render_instance(settings, policy, bind=bind, shards=info["map_shards"])
        staged = layout.config.with_name(layout.config.name + ".next")
        write_private(staged, text)
        ok, output = check_config(staged, proc.binary)
        if not ok:
            staged.unlink()
            raise DemoError(f"haproxy -c rejected the config with the new keys:\n{output}")
        staged.replace(layout.config)
        proc.reload()

    admin = RuntimeAddress.parse(info["runtime_api"])
    follower = KeyFollower(
        store, open_database(settings), apply, misses=lambda: read_kid_misses(admin)
    )
    follower.start()
    return follower
