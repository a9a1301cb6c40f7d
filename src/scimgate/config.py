"""scimgate configuration: one YAML file per instance, overridable by environment variables.

An *instance directory* (made by ``scimgate up --dir DIR``) holds ``scimgate.yaml``, the SQLite
database, the policy, keys and the HAProxy files. Every subcommand accepts ``--dir DIR`` or
``--config FILE``; ``SCIMGATE_DATABASE_URL`` overrides the database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_NAME = "scimgate.yaml"


class ConfigError(Exception):
    pass


@dataclass
class TargetConfig:
    """One HAProxy instance to keep in sync."""

    name: str
    runtime_api: str  # "unix:/path/admin.sock" or "tcp:127.0.0.1:9999"
    master_api: str | None = None  # master CLI, to detect reloads/restarts
    map_dir: str | None = None  # where this target loads its map files from


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
            "targets": [t.__dict__ for t in self.targets],
            "read_your_writes": self.read_your_writes,
            "read_your_writes_timeout": self.read_your_writes_timeout,
            "drift_check_interval": self.drift_check_interval,
            "deprovision_alert_seconds": self.deprovision_alert_seconds,
            "max_body_bytes": self.max_body_bytes,
            "bulk_max_operations": self.bulk_max_operations,
            "bulk_max_payload_bytes": self.bulk_max_payload_bytes,
            "sqlite_synchronous": self.sqlite_synchronous,
            "log_level": self.log_level,
        }
        return yaml.safe_dump(data, sort_keys=False)


_FIELD_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _typed(path: Path, key: str, value: Any) -> Any:
    """Check a setting's type against the Settings field (ints are fine where floats go)."""
    wanted = _FIELD_TYPES.get(str(Settings.__dataclass_fields__[key].type))
    if wanted is None:
        return value
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if wanted is int and isinstance(value, bool):
        raise ConfigError(f"{path}: {key} must be an integer, not {value!r}")
    if not isinstance(value, wanted):
        raise ConfigError(f"{path}: {key} must be of type {wanted.__name__}, not {value!r}")
    return value


def redact_url(url: str) -> str:
    """A database URL without its password, for logs and stack.json."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def default_sqlite_url(base_dir: Path) -> str:
    return f"sqlite:///{(base_dir / 'scimgate.db').resolve()}"


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
    base = path.parent.resolve()
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = loaded
    elif config is not None:
        raise ConfigError(f"{path}: no such config file")
    known = set(Settings.__dataclass_fields__) - {
        "base_dir",
        "targets",
        "policy_file",
        "hmac_secret_file",
    }
    unknown = set(data) - known - {"targets", "policy_file", "hmac_secret_file"}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    kwargs = {k: v for k, v in data.items() if k in known and v is not None}
    for key, value in kwargs.items():
        kwargs[key] = _typed(path, key, value)
    settings = Settings(
        base_dir=base,
        **{"database_url": default_sqlite_url(base), **kwargs},
        policy_file=_resolve(base, data.get("policy_file")),
        hmac_secret_file=_resolve(base, data.get("hmac_secret_file")),
        targets=[TargetConfig(**t) for t in (data.get("targets") or [])],
    )
    if env_url := os.environ.get("SCIMGATE_DATABASE_URL"):
        settings.database_url = env_url
    return settings
