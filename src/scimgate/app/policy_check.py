"""`scimgate policy check` as a use case: every problem of a policy file, located.

Does: load and validate the policy (``policy.model``: line-numbered problems), check the
files it points at by rendering it once (``policy.render``), place such a problem at the
YAML key it comes from, and summarise a valid policy's routes.
Does not: print, or exit (``scimgate.cli``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scimgate.policy.model import ANY_GROUP, Policy, PolicyError, load_policy
from scimgate.policy.render import RenderError, render_config


@dataclass
class PolicyCheck:
    path: Path
    policy: Policy | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> list[str]:
        """A valid policy in a few lines: identity, groups, and who reaches each route."""
        policy = self.policy
        assert policy is not None
        groups = ", ".join(policy.groups) or "none"
        lines = [
            f"{self.path}: OK ({policy.identity.source} identity, {len(policy.groups)} "
            f"group(s): {groups}; {len(policy.routes)} route(s))"
        ]
        for route in policy.routes:
            hosts = ",".join(route.from_.hosts)
            if route.public:
                allowed = "public (no identity)"
            elif route.allow_sources:
                allowed = "sources " + " ".join(route.allow_sources) + " (no identity)"
            elif ANY_GROUP in route.allow_groups:
                allowed = "any active user"
            else:
                allowed = " or ".join(route.allow_groups) or "no people"
            if route.allow_agents is not None:
                kinds = [
                    *route.allow_agents.groups,
                    *(f"type {t}" for t in route.allow_agents.types),
                ]
                allowed += "; agents: " + " or ".join(kinds)
            if route.rate_limit is not None:
                allowed += f"; {route.rate_limit.requests}/{route.rate_limit.per} per identity"
            scopes = f" + scopes {' '.join(route.require_scopes)}" if route.require_scopes else ""
            lines.append(
                f"  {route.name:<12} {hosts} {route.from_.path_prefix:<14} {allowed}{scopes}"
            )
        return lines


def _node_mark(path: Path, keys: tuple[str, ...]) -> tuple[int, int]:
    """Line and column of a key in a YAML file (best effort; (0, 0) when not found)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return 0, 0
    mark = (0, 0)
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return mark
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                mark, node = (v.start_mark.line + 1, v.start_mark.column + 1), v
                break
        else:
            return mark
    return mark


def check_policy(path: Path) -> PolicyCheck:
    """Checks the YAML, every field, cross-references (undefined groups, unreachable routes)
    and the files the policy points at (the JWT public key must be a PUBLIC KEY PEM)."""
    check = PolicyCheck(path)
    try:
        check.policy = load_policy(path)
    except PolicyError as exc:
        check.problems = [str(problem) for problem in exc.problems]
        return check
    try:  # the files the policy points at (JWT public key, mTLS certificates)
        render_config(
            check.policy,
            mode="fragment",
            map_dir="/nonexistent",
            hmac_secret_b64="c2NpbWdhdGUtcG9saWN5LWNoZWNr",
            check_files=True,
        )
    except RenderError as exc:
        message = str(exc)
        if "mTLS server certificate" in message:
            keys: tuple[str, ...] = ("identity", "mtls", "server_cert")
        elif "mTLS CA" in message:
            keys = ("identity", "mtls", "ca_file")
        else:
            keys = ("identity", "jwt", "public_key")
        line, col = _node_mark(path, keys)
        where = f"{path}:{line}:{col}" if line else str(path)
        check.problems = [f"{where}: {message}"]
    return check
