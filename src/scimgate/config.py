"""scimgate configuration: one YAML file per instance, overridable by environment variables.

An *instance directory* (made by ``scimgate up --dir DIR``) holds ``scimgate.yaml``, the SQLite
database, the policy, keys and the HAProxy files. Every subcommand accepts ``--dir DIR`` or
``--config FILE``; ``SCIMGATE_DATABASE_URL`` overrides the database.

Does: read and type-check every setting, with one clear error per problem (the nested
``scim_front:`` mapping and the CIDR lists included).
Does not: decide defaults that depend on the machine (``scimgate up`` fills those in) or
touch HAProxy, the database or the network.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

CONFIG_NAME = "scimgate.yaml"
SQLITE_NAME = "scimgate.db"  # the default database, in the instance directory
UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the trailing NUL


class ConfigError(Exception):
    pass


@dataclass
class TargetConfig:
    """One HAProxy instance to keep in sync."""

    name: str
    runtime_api: str  # "unix:/path/admin.sock" or "tcp:127.0.0.1:9999"
    master_api: str | None = None  # master CLI, to detect reloads/restarts
    map_dir: str | None = None  # where this target loads its map files from
    # The enforcing frontend's listen address (ip:port) in the config `haproxy render`
    # makes for this target; `up --haproxy-port` records it for the local one.
    bind: str | None = None
    # The HAProxy config file rendered for this target (`haproxy render --target NAME -o
    # FILE`): with master_api, `serve` renders it again and reloads HAProxy when the JWKS
    # keys change (identity.jwt.jwks); without, the keys wait for a reload by hand.
    config_file: str | None = None

    def as_yaml(self) -> dict[str, str | None]:
        """The target as scimgate.yaml holds it (config_file only where set: the files
        written before it existed stay the same)."""
        return {k: v for k, v in self.__dict__.items() if k != "config_file" or v is not None}


@dataclass
class RateLimit:
    """Requests one source address may make per ``period`` seconds (0 requests: no limit)."""

    requests: int = 1200
    period: float = 60.0


@dataclass
class ScimFront:
    """HAProxy in front of the SCIM endpoint: ``scim_front:`` in scimgate.yaml.

    TLS, request deadlines, a connection bound, body limits (from ``max_body_bytes`` and
    ``bulk_max_payload_bytes``), a per-source rate limit and an optional allow-list of the
    IdP's published source ranges. `scimgate haproxy render` and `up` render it."""

    bind: str = "127.0.0.1:8443"
    # PEM with the certificate chain and its private key (HAProxy's `crt`); None: the demo
    # certificate `up` generates in DIR/tls/.
    certificate: Path | None = None
    # What a client verifies the certificate with (stack.json's scim_ca_file); None: the
    # system's trust store (or the demo CA, for the demo certificate).
    ca_file: Path | None = None
    http_request_timeout: float = 10.0  # request line + headers, whole (timeout http-request)
    client_timeout: float = 30.0  # client inactivity (timeout client)
    server_timeout: float = 60.0  # scimgate's answer (timeout server)
    max_connections: int = 2000
    max_connections_per_source: int = 100
    rate_limit: RateLimit = field(default_factory=RateLimit)
    allowed_sources: list[str] = field(default_factory=list)  # CIDRs; empty: any source

    def to_dict(self, base: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = relative_path(base, value)
            elif isinstance(value, RateLimit):
                value = {"requests": value.requests, "period": value.period}
            out[f.name] = value
        return out


@dataclass
class Settings:
    base_dir: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    policy_file: Path | None = None
    hmac_secret_file: Path | None = None
    map_shards: int = 0  # 0 = choose from the HAProxy version
    targets: list[TargetConfig] = field(default_factory=list)
    read_your_writes: bool = False
    read_your_writes_timeout: float = 2.0
    drift_check_interval: float = 60.0
    deprovision_alert_seconds: float = 10.0
    max_body_bytes: int = 1_048_576
    bulk_max_operations: int = 1000
    bulk_max_payload_bytes: int = 1_048_576
    max_results: int = 1000
    default_count: int = 100
    # Failed authentication (docs/operations.md "Failed authentication"): aggregated into one
    # audit event per source and window; a source over the limit in a window gets 429.
    auth_failure_window_seconds: float = 60.0
    auth_failure_limit: int = 60
    sqlite_synchronous: str = "FULL"
    log_level: str = "INFO"
    # How long an old HAProxy worker may live after a reload (seconds; the rendered
    # `hard-stop-after`): it keeps the maps it had, so a connection it still serves (a
    # WebSocket, a long download) would escape every later deprovision. docs/production.md.
    hard_stop_after: float = 60.0
    # Live sessions (docs/live-sessions.md): how often each target's cutter checks every
    # in-use tracked stream against the store (seconds; 0: never, only SCIM writes cut). The
    # sweep is the safety net for a cut missed while HAProxy was unreachable or scimgate down.
    live_session_sweep_seconds: float = 30.0
    # The direct port (host:port) and HAProxy's way in: a unix socket, where forwarded
    # headers are trusted because only HAProxy (this user and group) can open it.
    unix_socket: Path | None = None
    trusted_proxies: list[str] = field(default_factory=list)  # CIDRs whose X-Forwarded-* count
    client_header_timeout: float = 10.0  # request line + headers, per request
    client_body_timeout: float = 30.0  # the body, once the headers are in
    max_connections: int = 1000  # open connections on the direct port
    scim_front: ScimFront | None = None
    # The fleet (docs/fleet.md). A follower reads the change log at least this often
    # (seconds; an agent is also woken by PostgreSQL LISTEN, so it may poll less often).
    change_poll_interval: float = 0.2
    # A node whose agent has not beaten for this long is not live: writes do not wait for
    # it (its HAProxy fails closed by itself after strict_mode_seconds, if strict).
    node_live_seconds: float = 10.0
    heartbeat_interval: float = 1.0  # seconds between an agent's beats
    # Read-your-writes in the API role waits for every live node (bounded by
    # read_your_writes_timeout); this is how often it looks at the node table.
    fleet_poll_interval: float = 0.01
    # Strict mode (a fleet node's HAProxy config; docs/fleet.md): identity-gated routes are
    # denied once the node's agent has not vouched for strict_mode_seconds (it vouches only
    # while caught up with the change log). `up --nodes` and prepare_node turn it on.
    strict_mode: bool = False
    strict_mode_seconds: float = 30.0
    # The admin console (docs/console.md): its own listener, ADDRESS:PORT (port 0: any free
    # port, reported in stack.json); None: no console. Loopback unless you put it behind
    # a TLS proxy listed in trusted_proxies.
    console_bind: str | None = None
    console_session_seconds: float = 28800.0  # a session ends 8 h after sign-in ...
    console_idle_seconds: float = 1800.0  # ... or 30 min after its last request

    @property
    def config_path(self) -> Path:
        return self.base_dir / CONFIG_NAME

    def to_yaml(self) -> str:
        data: dict[str, Any] = {
            "database_url": self.database_url,
            "host": self.host,
            "port": self.port,
            "policy_file": str(self.policy_file) if self.policy_file else None,
            "hmac_secret_file": str(self.hmac_secret_file) if self.hmac_secret_file else None,
            "map_shards": self.map_shards,
            "targets": [t.as_yaml() for t in self.targets],
            "read_your_writes": self.read_your_writes,
            "read_your_writes_timeout": self.read_your_writes_timeout,
            "drift_check_interval": self.drift_check_interval,
            "deprovision_alert_seconds": self.deprovision_alert_seconds,
            "max_body_bytes": self.max_body_bytes,
            "bulk_max_operations": self.bulk_max_operations,
            "bulk_max_payload_bytes": self.bulk_max_payload_bytes,
            "sqlite_synchronous": self.sqlite_synchronous,
            "log_level": self.log_level,
            "hard_stop_after": self.hard_stop_after,
            "unix_socket": relative_path(self.base_dir, self.unix_socket)
            if self.unix_socket
            else None,
            "trusted_proxies": list(self.trusted_proxies),
            "client_header_timeout": self.client_header_timeout,
            "client_body_timeout": self.client_body_timeout,
            "max_connections": self.max_connections,
            "console_bind": self.console_bind,
            "console_session_seconds": self.console_session_seconds,
            "console_idle_seconds": self.console_idle_seconds,
        }
        if self.scim_front is not None:
            data["scim_front"] = self.scim_front.to_dict(self.base_dir)
        return yaml.safe_dump(data, sort_keys=False)


def relative_path(base: Path, path: Path) -> str:
    """``path`` relative to ``base`` when it is inside it (how scimgate.yaml stores paths)."""
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


# live_session_sweep_seconds: a sweep reads every worker's session table and `show sess`,
# so not more often than every second; a day at most (a longer wait is "off", say 0).
SWEEP_MIN_SECONDS = 1.0
SWEEP_MAX_SECONDS = 86400.0
_FIELD_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
# Settings that are a duration or a count: zero or less makes no sense (and would disable
# a safeguard silently).
_POSITIVE = frozenset({
    "client_header_timeout", "client_body_timeout", "max_connections", "http_request_timeout",
    "client_timeout", "server_timeout", "max_connections_per_source", "period",
    "change_poll_interval", "node_live_seconds", "heartbeat_interval", "fleet_poll_interval",
    "strict_mode_seconds",
    "hard_stop_after",
    "console_session_seconds", "console_idle_seconds",
})  # fmt: skip


def _typed(path: Path, key: str, value: Any, owner: type = Settings, prefix: str = "") -> Any:
    """Check a setting's type against the dataclass field (ints are fine where floats go)."""
    wanted = _FIELD_TYPES.get(str(owner.__dataclass_fields__[key].type))  # type: ignore[attr-defined]
    name = prefix + key
    if wanted is None:
        return value
    value = _of_type(path, name, value, wanted)
    if key in _POSITIVE and value <= 0:
        raise ConfigError(f"{path}: {name} must be greater than 0, not {value!r}")
    if key == "live_session_sweep_seconds" and not (
        value == 0 or SWEEP_MIN_SECONDS <= value <= SWEEP_MAX_SECONDS
    ):
        raise ConfigError(
            f"{path}: {name} must be 0 (no sweep) or from {SWEEP_MIN_SECONDS:g} to "
            f"{SWEEP_MAX_SECONDS:g} seconds, not {value!r}"
        )
    if key == "requests" and value < 0:
        raise ConfigError(f"{path}: {name} must be 0 (no limit) or more, not {value!r}")
    return value


def _of_type(path: Path, key: str, value: Any, wanted: type) -> Any:
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if wanted is int and isinstance(value, bool):
        raise ConfigError(f"{path}: {key} must be an integer, not {value!r}")
    if not isinstance(value, wanted):
        raise ConfigError(f"{path}: {key} must be of type {wanted.__name__}, not {value!r}")
    return value


def _networks(path: Path, key: str, value: Any) -> list[str]:
    """A list of CIDR networks ("10.0.0.0/8", "2001:db8::/32"; a bare address is a /32 or
    /128), normalised. Host bits set is an error: "10.1.2.3/8" is usually a typo."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{path}: {key} must be a list of CIDR networks, not {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{path}: {key} #{i + 1} must be a CIDR string, not {item!r}")
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=True)))
        except ValueError as exc:
            raise ConfigError(
                f"{path}: {key} #{i + 1} {item!r} is not a CIDR network: {exc}"
            ) from None
    return out


def parse_bind(text: str, *, allow_any_port: bool = False) -> tuple[str, int]:
    """("127.0.0.1", 8443) from "127.0.0.1:8443"; ("::", 8443) from "[::]:8443"; ValueError
    for anything else (a host name, a missing port). ``allow_any_port``: port 0 (any free
    port) is accepted."""
    host, sep, port_text = text.rpartition(":")
    lowest = 0 if allow_any_port else 1
    if not sep or not port_text.isdigit() or not lowest <= int(port_text) < 65536:
        raise ValueError("expected ADDRESS:PORT with a port from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ipaddress.ip_address(host).version != 6:
            raise ValueError("only an IPv6 address goes in brackets")
    elif host in ("", "*"):
        host = "0.0.0.0"
    else:
        if ipaddress.ip_address(host).version != 4:
            raise ValueError("write an IPv6 address in brackets: [::1]:8443")
    return host, int(port_text)


def _scim_front(path: Path, base: Path, value: Any) -> ScimFront | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: scim_front must be a mapping (bind, certificate, ...)")
    known = {f.name for f in fields(ScimFront)}
    unknown = set(value) - known
    if unknown:
        raise ConfigError(
            f"{path}: unknown scim_front setting(s): {', '.join(sorted(map(str, unknown)))} "
            f"(known: {', '.join(sorted(known))})"
        )
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        if item is None:
            continue
        name = f"scim_front.{key}"
        if key in ("certificate", "ca_file"):
            kwargs[key] = _resolve(base, _of_type(path, name, item, str))
        elif key == "allowed_sources":
            kwargs[key] = _networks(path, name, item)
        elif key == "rate_limit":
            kwargs[key] = _rate_limit(path, item)
        else:
            kwargs[key] = _typed(path, key, item, ScimFront, "scim_front.")
    front = ScimFront(**kwargs)
    try:
        parse_bind(front.bind)
    except ValueError as exc:
        raise ConfigError(f"{path}: scim_front.bind {front.bind!r}: {exc}") from None
    return front


def _rate_limit(path: Path, value: Any) -> RateLimit:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: scim_front.rate_limit must be a mapping (requests, period)")
    unknown = set(value) - {"requests", "period"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown scim_front.rate_limit setting(s): {', '.join(sorted(map(str, unknown)))}"
        )
    kwargs = {
        k: _typed(path, k, v, RateLimit, "scim_front.rate_limit.")
        for k, v in value.items()
        if v is not None
    }
    return RateLimit(**kwargs)


def redact_url(url: str) -> str:
    """A database URL without its password, for logs and stack.json."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def default_sqlite_url(base_dir: Path) -> str:
    return f"sqlite:///{(base_dir / SQLITE_NAME).resolve()}"


def _resolve(base: Path, value: str | None) -> Path | None:
    if not value:
        return None
    p = Path(value)
    return p if p.is_absolute() else (base / p)


def load_settings(
    *, directory: str | Path | None = None, config: str | Path | None = None
) -> Settings:
    """Settings of the instance in ``directory`` or from ``config``; env overrides last."""
    if config is not None:
        path = Path(config)
    elif directory is not None:
        path = Path(directory) / CONFIG_NAME
    else:
        env_dir = os.environ.get("SCIMGATE_DIR")
        path = Path(env_dir or ".") / CONFIG_NAME
    data: dict[str, Any] = {}
    text = ""
    if path.exists():
        text = path.read_text()
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or exc
            raise ConfigError(f"{where}: YAML syntax: {problem}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}:1:1: expected a mapping at the top level")
        data = loaded
    elif config is not None:
        raise ConfigError(f"{path}: no such config file")
    try:
        return _settings_from(path, data)
    except ConfigError as exc:
        raise ConfigError(located(str(exc), path, text)) from None


def _settings_from(path: Path, data: dict[str, Any]) -> Settings:
    base = path.parent.resolve()
    special = {
        "targets", "policy_file", "hmac_secret_file", "unix_socket", "trusted_proxies",
        "scim_front",
    }  # fmt: skip
    known = set(Settings.__dataclass_fields__) - {"base_dir"} - special
    unknown = set(data) - known - special
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(sorted(map(str, unknown)))}")
    kwargs = {k: v for k, v in data.items() if k in known and v is not None}
    for key, value in kwargs.items():
        kwargs[key] = _typed(path, key, value)
    unix_socket = data.get("unix_socket")
    if unix_socket is not None:
        _of_type(path, "unix_socket", unix_socket, str)
        resolved = _resolve(base, unix_socket)
        if resolved is not None and len(str(resolved).encode()) > UNIX_PATH_MAX:
            raise ConfigError(
                f"{path}: unix_socket {resolved} is longer than a unix socket path may be "
                f"({UNIX_PATH_MAX} bytes)"
            )
    settings = Settings(
        base_dir=base,
        **{"database_url": default_sqlite_url(base), **kwargs},
        policy_file=_resolve(base, data.get("policy_file")),
        hmac_secret_file=_resolve(base, data.get("hmac_secret_file")),
        targets=_targets(path, data.get("targets")),
        unix_socket=_resolve(base, unix_socket),
        trusted_proxies=_networks(path, "trusted_proxies", data.get("trusted_proxies")),
        scim_front=_scim_front(path, base, data.get("scim_front")),
    )
    if settings.console_bind is not None:
        try:
            parse_bind(settings.console_bind, allow_any_port=True)
        except ValueError as exc:
            raise ConfigError(f"{path}: console_bind {settings.console_bind!r}: {exc}") from None
    if env_url := os.environ.get("SCIMGATE_DATABASE_URL"):
        settings.database_url = env_url
    return settings


def _targets(path: Path, value: Any) -> list[TargetConfig]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{path}: targets must be a list of mappings (name, runtime_api, ...)")
    known = {f.name for f in fields(TargetConfig)}
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: targets #{i + 1} must be a mapping (name, runtime_api)")
        unknown = set(item) - known
        if unknown:
            raise ConfigError(
                f"{path}: unknown targets #{i + 1} setting(s): "
                f"{', '.join(sorted(map(str, unknown)))} (known: {', '.join(sorted(known))})"
            )
        for key in ("name", "runtime_api"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ConfigError(f"{path}: targets #{i + 1}.{key} must be a non-empty string")
        for key, entry in item.items():
            if entry is not None:
                _of_type(path, f"targets #{i + 1}.{key}", entry, str)
        config_file = item.get("config_file")
        if config_file is not None and not Path(config_file).is_absolute():
            raise ConfigError(f"{path}: targets #{i + 1}.config_file must be an absolute path")
        out.append(TargetConfig(**item))
    return out


# "port must ...", "scim_front.rate_limit.period must ...", "trusted_proxies #2 ...",
# "unknown scim_front setting(s): x, y": the setting a message is about.
_UNKNOWN_RE = re.compile(
    r"^unknown (?:(?P<parent>[\w.]+(?: #\d+)?) )?setting\(s\): (?P<key>[^,\s]+)"
)
_SETTING_RE = re.compile(r"^(?P<key>[A-Za-z_]\w*(?:(?:\.[A-Za-z_]\w*)|(?: #\d+))*)")


def located(message: str, path: Path, text: str) -> str:
    """``FILE: setting ...`` -> ``FILE:LINE:COLUMN: setting ...``, the line and column of
    the setting in the YAML file (the message as it was when it cannot be placed)."""
    prefix = f"{path}: "
    if not message.startswith(prefix) or not text:
        return message
    rest = message[len(prefix) :]
    unknown = _UNKNOWN_RE.match(rest)
    if unknown:
        parent = unknown.group("parent")
        dotted = f"{parent}.{unknown.group('key')}" if parent else unknown.group("key")
    else:
        setting = _SETTING_RE.match(rest)
        if setting is None:
            return message
        dotted = setting.group("key")
    mark = _setting_mark(text, dotted)
    return f"{path}:{mark[0]}:{mark[1]}: {rest}" if mark else message


def _setting_mark(text: str, dotted: str) -> tuple[int, int] | None:
    """Line and column (from 1) of ``a.b #2.c`` in the YAML text: the deepest part found."""
    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    mark = None
    for part in re.findall(r"[A-Za-z_]\w*| #\d+", dotted):
        if part.startswith(" #") and isinstance(node, yaml.SequenceNode):
            index = int(part[2:]) - 1
            if index >= len(node.value):
                break
            node = node.value[index]
            mark = (node.start_mark.line + 1, node.start_mark.column + 1)
            continue
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == part:
                mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                node = value_node
                break
        else:
            break
    return mark
