"""A policy rendered for a real HAProxy in a test: the pseudonym secret, and map files that
hold the entries of some users (as the sync engine's files would)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from scimgate.policy import Policy, entries_for_user, map_file_names
from scimgate.policy.compiler import OVERLAY_MAP_NAME, shard_of

SECRET = b"integration-test-secret-0123456789"
SECRET_B64 = base64.b64encode(SECRET).decode()
ADMINS = [{"displayName": "Admins", "externalId": "00g1"}]  # an IdP group the policies map


def write_maps(
    map_dir: Path,
    policy: Policy,
    shards: int,
    users: list[tuple[dict[str, Any], list[dict[str, str]]]],
) -> None:
    map_dir.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {name: [] for name in map_file_names(shards)}
    names = map_file_names(shards)
    for user, groups in users:
        for key, value in entries_for_user(user, groups, policy, SECRET).items():
            lines[names[shard_of(key, shards)]].append(f"{key} {value}\n")
    for name, content in lines.items():
        (map_dir / name).write_text("".join(content))
    (map_dir / OVERLAY_MAP_NAME).write_text("")
