"""The policy as the SCIM handler needs it: entries per user, and which IdP groups matter."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

from scimgate.policy.compiler import entries_for_user
from scimgate.policy.model import Policy


class PolicyEnforcement:
    def __init__(self, policy: Policy, secret: bytes) -> None:
        self.policy = policy
        self.secret = secret
        self._idp_groups = {g for group in policy.groups.values() for g in group.idp_groups}

    def entries(self, user: dict[str, Any], idp_groups: list[dict[str, Any]]) -> dict[str, str]:
        return entries_for_user(user, idp_groups, self.policy, self.secret)

    def group_relevant(self, display_name: str | None, external_id: str | None) -> bool:
        return display_name in self._idp_groups or external_id in self._idp_groups


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
