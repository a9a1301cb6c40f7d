"""The instance directory: where an instance keeps its policy, keys, certificates and
HAProxy files, and the files `up` creates there when they are missing.

Layout of an instance directory (created if missing, reused if present)::

    DIR/scimgate.yaml          the instance config (``scimgate.config``)
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

The instance config (scimgate.yaml) is updated to point at these (:func:`persist_settings`),
with one target named ``local``; the map shard count is decided from the HAProxy version
once and persisted.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scimgate.config import CONFIG_NAME, ScimFront, Settings, TargetConfig, relative_path

# The demo key, certificate and policy makers (``instance.democert``, ``policy.jwtmint``) are
# imported where a file is missing: they load `cryptography` and PyJWT (~8 MB resident),
# which a serving instance, that only reads its secret here, never needs.

TARGET_NAME = "local"


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


def write_private(path: Path, text: str) -> None:
    """Write ``path`` atomically, readable by this user only from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def write_public(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def load_or_create_secret(path: Path) -> bytes:
    """The HMAC secret (32 random bytes, stored base64, mode 0600). Rotating it re-keys every
    identity: do it with `scimgate resync` right after."""
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(base64.b64encode(raw).decode() + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return raw


# ---------------------------------------------------------------------------------------------
# Files `up` creates when missing


def ensure_demo_keys(layout: Layout) -> None:
    """The demo RSA key pair; generated once, reused afterwards."""
    if layout.private_key.exists() and layout.public_key.exists():
        return
    from scimgate.policy.jwtmint import generate_rsa_keypair

    layout.keys.mkdir(parents=True, exist_ok=True)
    layout.keys.chmod(0o700)
    private_pem, public_pem = generate_rsa_keypair()
    write_private(layout.private_key, private_pem)
    write_public(layout.public_key, public_pem)


def ensure_demo_certificate(layout: Layout, host: str) -> None:
    """The SCIM endpoint's demo TLS certificate (``instance.democert``): DIR/tls/scim.pem
    with its key (0600) and the CA a client verifies with, DIR/tls/ca.pem. Made again when
    missing, expiring within 30 days or not naming ``host``. Production:
    scim_front.certificate."""
    from scimgate.instance.democert import demo_certificate, demo_certificate_current

    if (
        layout.scim_ca.exists()
        and layout.scim_certificate.exists()
        and demo_certificate_current(layout.scim_certificate.read_bytes(), host)
    ):
        return
    chain_and_key, ca = demo_certificate(host)
    layout.tls.mkdir(parents=True, exist_ok=True)
    write_private(layout.scim_certificate, chain_and_key)
    write_public(layout.scim_ca, ca)


def policy_path(settings: Settings) -> Path:
    """The instance's policy file: the configured one, else DIR/policy.yaml."""
    return settings.policy_file or Layout(settings.base_dir).policy


def ensure_demo_policy(settings: Settings) -> Path:
    """Write the demo policy if the instance has none yet; return the policy path."""
    from scimgate.policy.jwtmint import demo_policy_yaml

    path = policy_path(settings)
    if not path.exists():
        if settings.policy_file is not None:
            raise DemoError(f"policy file {path} (from {settings.config_path}) does not exist")
        write_public(
            path,
            demo_policy_yaml(
                public_key="keys/jwt.pub.pem", agents=True, ws_port=_free_loopback_port()
            ),
        )
    return path


def _free_loopback_port() -> int:
    """A loopback port free now (the demo WebSocket echo backend's, kept in the policy)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hmac_secret_path(settings: Settings) -> Path:
    return settings.hmac_secret_file or Layout(settings.base_dir).hmac_key


def persist_settings(
    settings: Settings, layout: Layout, policy: Path, shards: int, bind: str | None = None
) -> None:
    """Point the instance at its policy and its local HAProxy (in memory and in scimgate.yaml);
    ``bind`` is the local HAProxy's enforcing frontend (what `haproxy render` renders).

    Only the keys `up` owns are rewritten; everything else in the file stays as it was
    (including the port, which --port overrides for one run only)."""
    target = TargetConfig(
        name=TARGET_NAME,
        runtime_api=f"unix:{layout.admin_socket}",
        master_api=f"unix:{layout.master_socket}",
        map_dir=str(layout.maps),
        bind=bind,
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
    data["targets"] = [t.as_yaml() for t in settings.targets]
    text = yaml.safe_dump(data, sort_keys=False)
    if not cfg.exists() or cfg.read_text() != text:
        write_private(cfg, text)
