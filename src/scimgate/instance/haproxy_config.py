"""The HAProxy configuration of an instance: its policy, pseudonym secret, sockets and map
layout rendered into one haproxy.cfg (and the SCIM endpoint's TLS frontend when
``scim_front`` is set), the empty map files it loads, and `haproxy -c` on the result.

Does: choose what to render from the instance's settings and files.
Does not: the rendering rules (``scimgate.policy.render``), or start HAProxy
(``instance.local_haproxy``).
"""

from __future__ import annotations

import base64
import ipaddress
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from scimgate.config import ScimFront, Settings, TargetConfig, parse_bind
from scimgate.haproxy.mapfile import write_map_file
from scimgate.haproxy.process import HAProxyNotFound, binary_version, check_config
from scimgate.instance.jwks_keys import KeyStore
from scimgate.instance.layout import (
    TARGET_NAME,
    DemoError,
    Layout,
    hmac_secret_path,
    load_or_create_secret,
)
from scimgate.policy.compiler import OVERLAY_MAP_NAME, map_file_names, shard_of
from scimgate.policy.jwt_model import PSS_MIN_HAPROXY
from scimgate.policy.model import Policy
from scimgate.policy.render import render_config
from scimgate.policy.render_scim import render_scim_front, upstream_address

DEFAULT_HAPROXY_PORT = 8080
DEFAULT_BIND = f"127.0.0.1:{DEFAULT_HAPROXY_PORT}"

RenderMode = Literal["full", "fragment", "scim"]


def public_scim_url(front: ScimFront) -> str:
    """The SCIM base URL on HAProxy's TLS port (a wildcard bind: its loopback address)."""
    host, port = parse_bind(front.bind)
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"https://{shown}:{port}/scim/v2"


def scim_certificate(settings: Settings) -> Path:
    """The certificate the SCIM frontend serves: the configured one, else the demo one."""
    front = settings.scim_front
    if front is not None and front.certificate is not None:
        return front.certificate
    return Layout(settings.base_dir).scim_certificate


def scim_ca_file(settings: Settings) -> Path | None:
    """What a client verifies the SCIM endpoint with (None: the system's trust store)."""
    front = settings.scim_front
    if front is not None and front.certificate is not None:
        return front.ca_file
    return Layout(settings.base_dir).scim_ca


def scim_frontend(settings: Settings, *, check_files: bool = True) -> list[str]:
    """The SCIM frontend and backend of this instance ([] when scim_front is not set)."""
    front = settings.scim_front
    if front is None:
        return []
    certificate = scim_certificate(settings)
    if check_files and not certificate.exists():
        raise DemoError(
            f"no TLS certificate for the SCIM endpoint: {certificate} does not exist (set "
            f"scim_front.certificate in {settings.config_path}, or run `scimgate up` once "
            "for the demo certificate)"
        )
    return render_scim_front(
        front,
        certificate=str(certificate),
        upstream=upstream_address(
            unix_socket=str(settings.unix_socket) if settings.unix_socket else None,
            host=settings.host,
            port=settings.port,
        ),
        max_body_bytes=settings.max_body_bytes,
        bulk_max_payload_bytes=settings.bulk_max_payload_bytes,
        check_files=check_files,
    )


def choose_map_shards(settings: Settings, binary: str | None = None) -> int:
    """The configured shard count, or the one the sync engine chooses for this HAProxy."""
    from scimgate.sync import choose_shards

    if settings.map_shards:
        try:
            return choose_shards((0, 0, 0), settings.map_shards)
        except ValueError as exc:
            raise DemoError(str(exc)) from exc
    return choose_shards(binary_version(binary))


def write_map_files(map_dir: Path, entries: Mapping[str, str], shards: int) -> list[Path]:
    """Every map file of the layout, each holding its shard's entries (empty ones too:
    HAProxy refuses to start on a missing map file)."""
    map_dir.mkdir(parents=True, exist_ok=True)
    per_shard: list[dict[str, str]] = [{} for _ in range(shards)]
    for key, value in entries.items():
        per_shard[shard_of(key, shards)][key] = value
    paths = []
    for name, part in zip(map_file_names(shards), per_shard, strict=True):
        write_map_file(map_dir / name, part)
        paths.append(map_dir / name)
    # The overlay starts empty: the shards hold everything.
    write_map_file(map_dir / OVERLAY_MAP_NAME, {})
    paths.append(map_dir / OVERLAY_MAP_NAME)
    return paths


def render_instance(
    settings: Settings,
    policy: Policy,
    *,
    mode: RenderMode = "full",
    bind: str | None = None,
    shards: int | None = None,
    map_dir: str | None = None,
    target_name: str | None = None,
) -> str:
    """The HAProxy config of an instance: its policy, secret, sockets and map layout, and the
    SCIM endpoint's frontend when scim_front is set (mode ``scim``: that frontend alone).
    ``target_name``: render for that target (its sockets, map directory and bind); None: the
    ``local`` target (or the first), with the instance directory's defaults."""
    front = scim_frontend(settings, check_files=mode != "fragment")
    if mode == "scim":
        if not front:
            raise DemoError(f"no scim_front in {settings.config_path}: nothing to render")
        return (
            "\n".join(["# Generated by scimgate from scimgate.yaml (scim_front).", *front]) + "\n"
        )
    layout = Layout(settings.base_dir)
    target = render_target(settings, target_name)
    master: str | None
    if target is not None and target_name is not None:
        # A named target gets its own sockets and map directory, never the local defaults.
        stats = target_socket(target.runtime_api, what="runtime_api", target=target.name)
        master = (
            target_socket(target.master_api, what="master_api", target=target.name)
            if target.master_api
            else None
        )
        if not target.map_dir:
            raise DemoError(
                f"target {target.name!r} has no map_dir in {settings.config_path}: set it to the "
                "directory that HAProxy loads the identity maps from"
            )
        target_maps = target.map_dir
    else:
        stats = unix_path(target.runtime_api if target else None, layout.admin_socket)
        master = unix_path(target.master_api if target else None, layout.master_socket)
        target_maps = target.map_dir if target and target.map_dir else str(layout.maps)
    secret_file = hmac_secret_path(settings)
    secret = load_or_create_secret(secret_file)
    store = key_store(settings, policy)
    return render_config(
        policy,
        mode=mode,
        map_dir=map_dir or target_maps,
        shards=shards if shards is not None else choose_map_shards(settings),
        hmac_secret_b64=base64.b64encode(secret).decode("ascii"),
        bind=bind or (target.bind if target and target.bind else DEFAULT_BIND),
        stats_socket=stats,
        master_socket=master,
        log_target="stdout format raw",
        scim_frontend=front,
        strict_seconds=max(1, round(settings.strict_mode_seconds))
        if settings.strict_mode
        else None,
        jwt_keys=store.pinned(pss=verifies_pss()) if store is not None else (),
        hard_stop_after=settings.hard_stop_after,
        hmac_secret_source=str(secret_file),
    )


def render_target(settings: Settings, name: str | None) -> TargetConfig | None:
    """The target to render for: the named one (an error when there is none), else the
    ``local`` target, else the first."""
    if name is not None:
        for named in settings.targets:
            if named.name == name:
                return named
        known = ", ".join(t.name for t in settings.targets) or "none"
        raise DemoError(f"no target named {name!r} in {settings.config_path} (targets: {known})")
    local = next((t for t in settings.targets if t.name == TARGET_NAME), None)
    if local is None and settings.targets:
        return settings.targets[0]
    return local


def unix_path(address: str | None, default: Path) -> str:
    if address and address.startswith(("unix:", "unix@")):
        return address[5:]
    return str(default)


def target_socket(address: str, *, what: str, target: str) -> str:
    """A target's socket as HAProxy's `stats socket` takes it: unix:PATH -> PATH,
    tcp:HOST:PORT -> ipv4@HOST:PORT (loopback only, like every target)."""
    if address.startswith(("unix:", "unix@")):
        return address[5:]
    if address.startswith("tcp:"):
        host, _, port = address[4:].rpartition(":")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if loopback and port.isdigit():
            return f"ipv4@{host}:{port}"
    raise DemoError(
        f"target {target!r}: {what} {address!r} is neither unix:PATH nor tcp:LOOPBACK:PORT"
    )


def verifies_pss(binary: str | None = None) -> bool:
    """The HAProxy binary (the one `up` runs and `haproxy -c` checks with) verifies PS*
    signatures (2.8 and later). Unknown (no binary): True, the keys are rendered and the
    config's own check, where there is one, says the rest."""
    try:
        return binary_version(binary) >= PSS_MIN_HAPROXY
    except (HAProxyNotFound, RuntimeError, OSError, ValueError):
        return True


def key_store(settings: Settings, policy: Policy) -> KeyStore | None:
    """The instance's JWKS key store (``DIR/keys/jwks``), when the policy uses one."""
    jwt = policy.identity.jwt
    if policy.identity.source != "jwt" or jwt is None or jwt.jwks is None:
        return None
    return KeyStore(Layout(settings.base_dir).keys / "jwks", jwt.jwks, jwt.issuer)


def check_rendered(
    settings: Settings,
    policy: Policy,
    shards: int,
    bind: str | None,
    target_name: str | None = None,
) -> tuple[bool, str]:
    """`haproxy -c` on the full config, rendered again with empty map files in a scratch
    directory (the instance's own map files may not exist yet)."""
    with tempfile.TemporaryDirectory(prefix="scimgate-check-") as scratch:
        maps = Path(scratch) / "maps"
        write_map_files(maps, {}, shards)
        cfg = Path(scratch) / "haproxy.cfg"
        cfg.write_text(
            render_instance(
                settings,
                policy,
                shards=shards,
                bind=bind,
                map_dir=str(maps),
                target_name=target_name,
            )
        )
        return check_config(cfg)
