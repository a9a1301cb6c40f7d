"""`scimgate init --dir DIR`: a production instance directory for an HAProxy you run yourself.

Does: write a commented ``scimgate.yaml`` (database, listeners, TLS front, trusted proxies,
one target with its Runtime API socket, master CLI and map directory, hard-stop-after) and a
commented ``policy.yaml``; generate the secrets (``hmac.key``, a stand-in JWT key pair when
the IdP's public key is not given) in files created 0600; write the empty map files HAProxy
needs to start; check that both files load.
Does not: start anything, touch the database, or overwrite an existing instance.
"""

from __future__ import annotations

import base64
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from scimgate.config import CONFIG_NAME, UNIX_PATH_MAX, default_sqlite_url, load_settings
from scimgate.instance.haproxy_config import write_map_files
from scimgate.instance.layout import DemoError, Layout, write_private, write_public

INIT_TARGET = "edge"


class InitError(DemoError):
    """The directory cannot be made an instance (it is one already, a path is unusable)."""


@dataclass(frozen=True)
class InitChoices:
    """What `scimgate init` asks for; every default is a loopback address or a path in DIR."""

    directory: Path
    port: int = 8000
    bind: str = "127.0.0.1:8080"  # HAProxy's enforcing frontend
    scim_bind: str = "0.0.0.0:8443"  # HAProxy's TLS frontend for the IdP
    certificate: Path | None = None  # PEM: chain + key (HAProxy `crt`)
    runtime_socket: Path | None = None
    master_socket: Path | None = None
    map_dir: Path | None = None
    database_url: str | None = None
    backend: str = "127.0.0.1:8081"  # the application HAProxy protects
    issuer: str = "https://idp.example.com/"
    audience: str = "my-app"
    jwt_public_key: Path | None = None  # the IdP's PUBLIC KEY PEM
    map_shards: int = 16


@dataclass(frozen=True)
class InitResult:
    files: list[Path]
    next_steps: list[str]
    stand_in_key: bool


def init_instance(choices: InitChoices) -> InitResult:
    base = choices.directory.resolve()
    layout = Layout(base)
    for existing in (base / CONFIG_NAME, layout.policy):
        if existing.exists():
            raise InitError(f"{existing} exists: init never overwrites an instance")
    runtime = (choices.runtime_socket or layout.admin_socket).resolve()
    master = (choices.master_socket or layout.master_socket).resolve()
    maps = (choices.map_dir or layout.maps).resolve()
    for socket_path in (runtime, master, layout.scim_socket):
        if len(str(socket_path).encode()) > UNIX_PATH_MAX:
            raise InitError(f"socket path longer than {UNIX_PATH_MAX} bytes: {socket_path}")
    certificate = choices.certificate.resolve() if choices.certificate else base / "tls/scim.pem"
    base.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    # Secrets first, each 0600 from its first byte.
    hmac_key = layout.hmac_key
    if not hmac_key.exists():
        write_private(hmac_key, base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        files.append(hmac_key)
    stand_in = choices.jwt_public_key is None
    if stand_in:
        from scimgate.policy.jwtmint import generate_rsa_keypair

        layout.keys.mkdir(parents=True, exist_ok=True)
        layout.keys.chmod(0o700)
        private_pem, public_pem = generate_rsa_keypair()
        write_private(layout.private_key, private_pem)
        write_public(layout.public_key, public_pem)
        files += [layout.private_key, layout.public_key]
        public_key = "keys/jwt.pub.pem"
    else:
        assert choices.jwt_public_key is not None
        idp_key = layout.keys / "idp.pub.pem"
        layout.keys.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(choices.jwt_public_key, idp_key)
        idp_key.chmod(0o644)
        files.append(idp_key)
        public_key = "keys/idp.pub.pem"

    write_private(
        base / CONFIG_NAME,
        CONFIG_TEMPLATE.format(
            database_url=choices.database_url or default_sqlite_url(base),
            port=choices.port,
            scim_socket=layout.scim_socket,
            scim_bind=choices.scim_bind,
            certificate=certificate,
            target=INIT_TARGET,
            runtime=runtime,
            master=master,
            maps=maps,
            bind=choices.bind,
            shards=choices.map_shards,
        ),
    )
    write_public(
        layout.policy,
        POLICY_TEMPLATE.format(
            public_key=public_key,
            issuer=choices.issuer,
            audience=choices.audience,
            backend=choices.backend,
        ),
    )
    files += [base / CONFIG_NAME, layout.policy]
    # HAProxy refuses to start on a missing map file; scimgate keeps them current later.
    files += write_map_files(maps, {}, choices.map_shards)

    settings = load_settings(directory=base)  # the template must load: a ConfigError here is ours
    from scimgate.policy.model import load_policy

    load_policy(layout.policy)
    d = str(base)
    steps = [
        *(
            [f"install your TLS certificate (chain + key, one PEM) at {certificate}"]
            if choices.certificate is None
            else []
        ),
        *(
            [
                f"replace {d}/keys/jwt.pub.pem with your IdP's PUBLIC KEY PEM (the stand-in "
                "key only signs `scimgate jwt mint` tokens), and set issuer/audience in "
                f"{d}/policy.yaml"
            ]
            if stand_in
            else []
        ),
        f"scimgate policy check --dir {d}",
        f"scimgate db upgrade --dir {d}",
        f"scimgate token create okta --dir {d} --expires-in 90d   # the IdP's SCIM bearer token",
        f"scimgate haproxy render --dir {d} --target {INIT_TARGET} -o /etc/haproxy/haproxy.cfg",
        f"haproxy -W -S {master},mode,600 -f /etc/haproxy/haproxy.cfg   # or your HAProxy unit",
        f"scimgate serve --dir {d}   # or deploy/systemd/scimgate.service",
        f"curl -s http://127.0.0.1:{settings.port}/readyz   # 200 once HAProxy is in sync",
    ]
    return InitResult(files=files, next_steps=steps, stand_in_key=stand_in)


CONFIG_TEMPLATE = """\
# scimgate instance configuration, written by `scimgate init`. docs/production.md explains
# every choice; docs/operations.md lists every setting. Relative paths are relative to this
# file's directory. This file may hold a database password: keep it mode 0600.

# The store. SQLite (one host, one scimgate process) or PostgreSQL (the URL's password is
# never logged), e.g. postgresql+psycopg://scimgate@db.internal/scimgate.
# SCIMGATE_DATABASE_URL overrides it.
database_url: {database_url}

# The direct port: loopback only, for local tools, /healthz, /readyz and /metrics.
host: 127.0.0.1
port: {port}
# HAProxy's way to the SCIM endpoint. Forwarded headers are believed only on this socket
# (0660: HAProxy's user must be in scimgate's group, see docs/production.md).
unix_socket: {scim_socket}
# Proxies whose X-Forwarded-For/-Proto count on the direct port (CIDRs). Keep it empty
# unless another proxy than HAProxy's unix socket reaches scimgate.
trusted_proxies: []

policy_file: policy.yaml
# The pseudonym secret (32 random bytes, base64, 0600). Back it up with the database:
# without it no identity in HAProxy's maps can be matched again.
hmac_secret_file: hmac.key
map_shards: {shards}
# A SCIM write answers once every HAProxy confirmed it (or after the timeout).
read_your_writes: true
read_your_writes_timeout: 2.0
# After a reload, an old HAProxy worker keeps the maps it had for the connections it still
# serves: cut them after this many seconds (rendered as hard-stop-after).
hard_stop_after: 60
log_level: INFO

# HAProxy's TLS frontend for the IdP (rendered by `scimgate haproxy render`).
scim_front:
  bind: {scim_bind}
  certificate: {certificate}   # certificate chain + private key, one PEM, readable by HAProxy
  ca_file: null                # what clients verify with; null: the system trust store
  # The IdP's published source ranges (CIDRs); empty: any source.
  allowed_sources: []
  rate_limit: {{requests: 1200, period: 60}}

# The HAProxy processes you run. scimgate pushes identities through the Runtime API
# socket, watches reloads through the master CLI and keeps the map files in map_dir current
# (HAProxy loads them at start). Add one entry per HAProxy.
targets:
  - name: {target}
    runtime_api: unix:{runtime}
    master_api: unix:{master}
    map_dir: {maps}
    bind: {bind}
    # With keys from a JWKS (identity.jwt.jwks): the config file you render for this
    # target; `serve` renders it again, checks it and reloads HAProxy on a key change.
    # config_file: /etc/haproxy/haproxy.cfg
"""

POLICY_TEMPLATE = """\
# scimgate policy, written by `scimgate init`: who may reach which route (docs/policy.md).
# Check it with `scimgate policy check --dir DIR` after every edit.
identity:
  # Callers present a JWT from your IdP; HAProxy verifies it (jwt_verify) and looks the
  # identity claim up in the identities map that scimgate fills from SCIM.
  source: jwt
  jwt:
    algorithm: RS256
    # Your IdP's signing key as a PUBLIC KEY PEM (a certificate PEM fails every token).
    public_key: {public_key}
    issuer: {issuer}
    audience: {audience}
    claim: email
    scope_claim: scope
    leeway_seconds: 30
  # The SCIM attributes a JWT's claim is matched against.
  key_attributes: [userName, emails]

# Policy groups: the IdP groups (SCIM displayName or externalId) that make them.
groups:
  admins: {{idp_groups: ["Admins"]}}

routes:
  - name: health
    from: {{hosts: ["*"], path_prefix: /healthz}}
    public: true
    to: {{return: "ok"}}
  - name: admin
    from: {{hosts: ["*"], path_prefix: /admin}}
    allow_groups: [admins]
    to: {{backend: be_app, servers: ["{backend}"]}}
  - name: app
    from: {{hosts: ["*"], path_prefix: /}}
    allow_groups: [any]
    to: {{backend: be_app, servers: ["{backend}"]}}

default: deny
"""
