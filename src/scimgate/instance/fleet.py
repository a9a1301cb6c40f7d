"""The directories of a fleet on one host: an API replicas' directory and one directory per
HAProxy node, all on one shared database (what `scimgate up --nodes N --replicas M` and the
fleet tests build; a real deployment has the same pieces on several hosts).

Does: make the API directory (config on the shared database, demo policy and keys, HMAC
secret, policy applied, a demo token) and each node's directory (config pointing at the
shared policy and secret, no SCIM frontend of its own, its HAProxy config and map files).
Does not: start anything (``instance.up`` and the tests do) or run an agent
(``instance.agent``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scimgate.app.enforcement import apply_policy
from scimgate.config import CONFIG_NAME, Settings, load_settings
from scimgate.instance.database import open_database
from scimgate.instance.layout import (
    Layout,
    ensure_demo_keys,
    ensure_demo_policy,
    hmac_secret_path,
    load_or_create_secret,
    write_private,
)
from scimgate.instance.local_haproxy import prepare_haproxy
from scimgate.policy.model import load_policy


def _write_config(directory: Path, data: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    current: dict[str, Any] = {}
    if path.exists():
        current = yaml.safe_load(path.read_text()) or {}
    # Written out like `up` and `init` do, so an operator sees (and can change) the bound on
    # an old worker's life after a reload; an operator's value is kept.
    current.setdefault("hard_stop_after", Settings.hard_stop_after)
    current.update(data)
    write_private(path, yaml.safe_dump(current, sort_keys=False))


def prepare_api_dir(directory: Path, database_url: str, *, port: int = 8000) -> Settings:
    """The API replicas' directory: config on ``database_url`` with read-your-writes on,
    the demo policy and keys (made once), the HMAC secret, the policy applied to the store.
    Returns its settings (every replica of this host serves from it, on its own port)."""
    directory = directory.resolve()
    _write_config(
        directory,
        {"database_url": database_url, "port": port, "read_your_writes": True,
         "unix_socket": None},
    )  # fmt: skip
    settings = load_settings(directory=directory)
    settings.database_url = database_url
    layout = Layout(directory)
    ensure_demo_keys(layout)
    policy_file = ensure_demo_policy(settings).resolve()
    secret_file = hmac_secret_path(settings)
    secret = load_or_create_secret(secret_file)
    _write_config(
        directory,
        {"policy_file": str(policy_file), "hmac_secret_file": str(secret_file.resolve())},
    )
    settings = load_settings(directory=directory)
    settings.database_url = database_url
    db = open_database(settings)
    try:
        apply_policy(db, load_policy(policy_file), secret, policy_file)
    finally:
        db.dispose()
    return settings


def prepare_node(
    api: Settings, directory: Path, *, haproxy_port: int, map_shards: int | None = None
) -> tuple[Settings, Layout, dict[str, Any]]:
    """One HAProxy node's directory: its config shares the API's database, policy and HMAC
    secret, has no SCIM frontend (the IdP reaches the replicas, not the nodes), and its
    HAProxy config and map files are rendered from the store (``prepare_haproxy``).
    Returns the node's settings (one target, its local HAProxy), layout and stack facts."""
    directory = directory.resolve()
    assert api.policy_file is not None
    data: dict[str, Any] = {
        "database_url": api.database_url,
        "policy_file": str(api.policy_file.resolve()),
        "hmac_secret_file": str(hmac_secret_path(api).resolve()),
        "unix_socket": None,
        "scim_front": None,
    }
    if map_shards:
        data["map_shards"] = map_shards
    existing = directory / CONFIG_NAME
    if not existing.exists() or "strict_mode" not in (yaml.safe_load(existing.read_text()) or {}):
        # A fleet node fails closed by itself unless told otherwise (docs/fleet.md argues it).
        data["strict_mode"] = True
    _write_config(directory, data)
    settings = load_settings(directory=directory)
    settings.database_url = api.database_url
    layout, info = prepare_haproxy(settings, haproxy_port=haproxy_port)
    # The node's demo keys are the API directory's (one IdP signs every node's tokens).
    info["jwt_private_key"] = str(Layout(api.base_dir).private_key)
    return settings, layout, info
