"""The HAProxy side of `scimgate up --dir DIR`: demo policy and keys, config, map files, HAProxy.

Layout of an instance directory (created if missing, reused if present)::

    DIR/policy.yaml            the policy (the demo policy unless one is already there)
    DIR/keys/jwt.key.pem       demo RSA private key (0600): `scimgate jwt mint` signs with it
    DIR/keys/jwt.pub.pem       its PUBLIC KEY PEM, which HAProxy's jwt_verify checks against
    DIR/hmac.key               the pseudonym secret (base64, 0600)
    DIR/haproxy/haproxy.cfg    rendered from the policy on every start (0600: holds the secret)
    DIR/haproxy/maps/          identity map file(s), written from the desired state
    DIR/haproxy/admin.sock     Runtime API (the sync engine's target `local`)
    DIR/haproxy/master.sock    master CLI (reload / restart detection)
    DIR/haproxy/haproxy.log    HAProxy's own output and access log
    DIR/tls/scim.pem           demo certificate + key of the SCIM endpoint's TLS (0600)
    DIR/tls/ca.pem             the demo CA that signed it: what a SCIM client verifies with
    DIR/scimgate.sock          scimgate's unix socket, HAProxy's way to the SCIM endpoint

The instance config (scimgate.yaml) is updated to point at these, with one target named
``local``; the map shard count is decided from the HAProxy version once and persisted.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from scimgate.app.enforcement import PolicyEnforcement, load_or_create_secret
from scimgate.config import (
    CONFIG_NAME,
    UNIX_PATH_MAX,
    ScimFront,
    Settings,
    TargetConfig,
    parse_bind,
    relative_path,
)
from scimgate.haproxy.mapfile import write_map_file
from scimgate.haproxy.process import HAProxyProcess, binary_version, check_config, find_haproxy
from scimgate.instance.democert import demo_certificate, demo_certificate_current
from scimgate.policy.compiler import OVERLAY_MAP_NAME, map_file_names, shard_of
from scimgate.policy.jwtmint import demo_policy_yaml, generate_rsa_keypair
from scimgate.policy.model import Policy, load_policy
from scimgate.policy.render import render_config
from scimgate.policy.render_scim import render_scim_front, upstream_address

TARGET_NAME = "local"
DEFAULT_HAPROXY_PORT = 8080


class DemoError(RuntimeError):
    """The instance directory cannot be turned into a running HAProxy."""


@dataclass(frozen=True)
class Layout:
    """Where an instance directory keeps its policy, keys and HAProxy files."""

    base: Path

    @property
    def policy(self) -> Path:
        return self.base / "policy.yaml"

    @property
    def keys(self) -> Path:
        return self.base / "keys"

    @property
    def private_key(self) -> Path:
        return self.keys / "jwt.key.pem"

    @property
    def public_key(self) -> Path:
        return self.keys / "jwt.pub.pem"

    @property
    def hmac_key(self) -> Path:
        return self.base / "hmac.key"

    @property
    def haproxy(self) -> Path:
        return self.base / "haproxy"

    @property
    def config(self) -> Path:
        return self.haproxy / "haproxy.cfg"

    @property
    def maps(self) -> Path:
        return self.haproxy / "maps"

    @property
    def admin_socket(self) -> Path:
        return self.haproxy / "admin.sock"

    @property
    def master_socket(self) -> Path:
        return self.haproxy / "master.sock"

    @property
    def log(self) -> Path:
        return self.haproxy / "haproxy.log"

    @property
    def pid_file(self) -> Path:
        return self.haproxy / "haproxy.pid"

    @property
    def tls(self) -> Path:
        return self.base / "tls"

    @property
    def scim_certificate(self) -> Path:
        return self.tls / "scim.pem"

    @property
    def scim_ca(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def scim_socket(self) -> Path:
        return self.base / "scimgate.sock"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def _write_public(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# Files


def ensure_demo_keys(layout: Layout) -> None:
    """The demo RSA key pair; generated once, reused afterwards."""
    if layout.private_key.exists() and layout.public_key.exists():
        return
    layout.keys.mkdir(parents=True, exist_ok=True)
    layout.keys.chmod(0o700)
    private_pem, public_pem = generate_rsa_keypair()
    _write_private(layout.private_key, private_pem)
    _write_public(layout.public_key, public_pem)


def ensure_demo_certificate(layout: Layout, host: str) -> None:
    """The SCIM endpoint's demo TLS certificate (``policy.democert``): DIR/tls/scim.pem with
    its key (0600) and the CA a client verifies with, DIR/tls/ca.pem. Made again when missing,
    expiring within 30 days or not naming ``host``. Production: scim_front.certificate."""
    if (
        layout.scim_ca.exists()
        and layout.scim_certificate.exists()
        and demo_certificate_current(layout.scim_certificate.read_bytes(), host)
    ):
        return
    chain_and_key, ca = demo_certificate(host)
    layout.tls.mkdir(parents=True, exist_ok=True)
    _write_private(layout.scim_certificate, chain_and_key)
    _write_public(layout.scim_ca, ca)


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


def policy_path(settings: Settings) -> Path:
    """The instance's policy file: the configured one, else DIR/policy.yaml."""
    return settings.policy_file or Layout(settings.base_dir).policy


def ensure_demo_policy(settings: Settings) -> Path:
    """Write the demo policy if the instance has none yet; return the policy path."""
    path = policy_path(settings)
    if not path.exists():
        if settings.policy_file is not None:
            raise DemoError(f"policy file {path} (from {settings.config_path}) does not exist")
        _write_public(path, demo_policy_yaml(public_key="keys/jwt.pub.pem"))
    return path


def hmac_secret_path(settings: Settings) -> Path:
    return settings.hmac_secret_file or Layout(settings.base_dir).hmac_key


def choose_map_shards(settings: Settings, binary: str | None = None) -> int:
    """The configured shard count, or the one the sync engine chooses for this HAProxy."""
    from scimgate.sync import choose_shards

    if settings.map_shards:
        try:
            return choose_shards((0, 0, 0), settings.map_shards)
        except ValueError as exc:
            raise DemoError(str(exc)) from exc
    return choose_shards(binary_version(binary))


def persist_settings(settings: Settings, layout: Layout, policy: Path, shards: int) -> None:
    """Point the instance at its policy and its local HAProxy (in memory and in scimgate.yaml).

    Only the keys `up` owns are rewritten; everything else in the file stays as it was
    (including the port, which --port overrides for one run only)."""
    target = TargetConfig(
        name=TARGET_NAME,
        runtime_api=f"unix:{layout.admin_socket}",
        master_api=f"unix:{layout.master_socket}",
        map_dir=str(layout.maps),
    )
    settings.policy_file = policy
    settings.hmac_secret_file = hmac_secret_path(settings)
    settings.map_shards = shards
    settings.read_your_writes = True
    others = [t for t in settings.targets if t.name != TARGET_NAME]
    settings.targets = [target, *others]

    cfg = settings.base_dir / CONFIG_NAME
    data: dict[str, Any] = {}
    if cfg.exists():
        loaded = yaml.safe_load(cfg.read_text()) or {}
        data = loaded if isinstance(loaded, dict) else {}

    def rel(path: Path) -> str:
        return relative_path(settings.base_dir, path)

    # An instance made before the SCIM endpoint went behind HAProxy gets the defaults once;
    # a key the user set (even to null) stays as it is.
    if "unix_socket" not in data:
        settings.unix_socket = layout.scim_socket
        data["unix_socket"] = rel(layout.scim_socket)
    if "scim_front" not in data:
        settings.scim_front = ScimFront()
        data["scim_front"] = settings.scim_front.to_dict(settings.base_dir)
    data["policy_file"] = rel(policy)
    data["hmac_secret_file"] = rel(settings.hmac_secret_file)
    data["map_shards"] = shards
    data["read_your_writes"] = True
    data["targets"] = [t.__dict__ for t in settings.targets]
    text = yaml.safe_dump(data, sort_keys=False)
    if not cfg.exists() or cfg.read_text() != text:
        _write_private(cfg, text)


# ---------------------------------------------------------------------------------------------
# Desired state -> map files


def sync_desired_state(settings: Settings, policy: Policy, secret: bytes) -> dict[str, str]:
    """Recompute every user's entries under the current policy (a policy edited between runs
    takes effect; only differences are logged, and audited) and return the desired map."""
    from scimgate.audit import log as audit
    from scimgate.store import migrate, outbox
    from scimgate.store.db import Database

    db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        migrate.upgrade(db)
        enforcement = PolicyEnforcement(policy, secret)
        with db.write() as conn:
            changes = outbox.rebuild_all(conn, enforcement.entries)
            if changes:
                audit.ensure_head(conn)
                digest = hashlib.sha256(policy_path(settings).read_bytes()).hexdigest()
                audit.append(
                    conn, "policy.apply", operation="rebuild",
                    detail={"policy_file": str(policy_path(settings)), "policy_sha256": digest,
                            "map_changes": len(changes),
                            "deprovisions": sum(c.deprovision for c in changes)},
                )  # fmt: skip
        with db.read() as conn:
            return outbox.desired_entries(conn)
    finally:
        db.dispose()


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


# ---------------------------------------------------------------------------------------------
# Rendering


def render_instance(
    settings: Settings,
    policy: Policy,
    *,
    mode: Literal["full", "fragment", "scim"] = "full",
    bind: str | None = None,
    shards: int | None = None,
    map_dir: str | None = None,
) -> str:
    """The HAProxy config of an instance: its policy, secret, sockets and map layout, and the
    SCIM endpoint's frontend when scim_front is set (mode ``scim``: that frontend alone)."""
    front = scim_frontend(settings, check_files=mode != "fragment")
    if mode == "scim":
        if not front:
            raise DemoError(f"no scim_front in {settings.config_path}: nothing to render")
        return (
            "\n".join(["# Generated by scimgate from scimgate.yaml (scim_front).", *front]) + "\n"
        )
    layout = Layout(settings.base_dir)
    target = next((t for t in settings.targets if t.name == TARGET_NAME), None)
    if target is None and settings.targets:
        target = settings.targets[0]

    def unix_path(address: str | None, default: Path) -> str:
        if address and address.startswith(("unix:", "unix@")):
            return address[5:]
        return str(default)

    stats = unix_path(target.runtime_api if target else None, layout.admin_socket)
    master = unix_path(target.master_api if target else None, layout.master_socket)
    secret = load_or_create_secret(hmac_secret_path(settings))
    return render_config(
        policy,
        mode=mode,
        map_dir=map_dir or (target.map_dir if target and target.map_dir else str(layout.maps)),
        shards=shards if shards is not None else choose_map_shards(settings),
        hmac_secret_b64=base64.b64encode(secret).decode("ascii"),
        bind=bind or f"127.0.0.1:{DEFAULT_HAPROXY_PORT}",
        stats_socket=stats,
        master_socket=master,
        log_target="stdout format raw",
        scim_frontend=front,
    )


# ---------------------------------------------------------------------------------------------
# HAProxy


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
    persist_settings(settings, layout, policy_file.resolve(), shards)

    front = settings.scim_front
    if front is not None and scim_tls_port is not None:
        host = parse_bind(front.bind)[0]
        front.bind = f"[{host}]:{scim_tls_port}" if ":" in host else f"{host}:{scim_tls_port}"
    if front is not None and front.certificate is None:
        ensure_demo_certificate(layout, parse_bind(front.bind)[0])
    entries = sync_desired_state(settings, policy, secret)
    write_map_files(layout.maps, entries, shards)
    port = haproxy_port or DEFAULT_HAPROXY_PORT
    text = render_instance(settings, policy, bind=f"127.0.0.1:{port}", shards=shards)
    _write_private(layout.config, text)
    ok, output = check_config(layout.config, binary)
    if not ok:
        raise DemoError(f"haproxy -c rejected {layout.config}:\n{output}")
    info: dict[str, Any] = {
        "haproxy_url": f"http://127.0.0.1:{port}",
        "runtime_api": f"unix:{layout.admin_socket}",
        "master_api": f"unix:{layout.master_socket}",
        "haproxy_config": str(layout.config),
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
        pid_file=layout.pid_file,
        log_path=layout.log,
        stats_socket=f"unix:{layout.admin_socket}",
    )
    proc.start()  # stops what it started if it does not become ready
    return proc, info
