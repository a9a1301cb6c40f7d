"""Strict mode's rendering (policy/render_fleet.py): the heartbeat table and its deny rule,
placed after the open routes and before any identity rule; absent without strict mode."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from scimgate.policy.jwtmint import demo_policy_yaml
from scimgate.policy.model import load_policy
from scimgate.policy.render import RenderError, render_config
from scimgate.policy.render_fleet import FLEET_HEARTBEAT_TABLE, HEARTBEAT_COMMAND


@pytest.fixture
def common(tmp_path: Path) -> dict[str, object]:
    (tmp_path / "policy.yaml").write_text(demo_policy_yaml(public_key="jwt.pub.pem"))
    return {
        "policy": load_policy(tmp_path / "policy.yaml"),
        "map_dir": "/maps",
        "hmac_secret_b64": base64.b64encode(b"x" * 32).decode(),
        "check_files": False,
    }


def test_strict_mode_renders_the_table_and_a_deny_before_identity(
    common: dict[str, object],
) -> None:
    text = render_config(mode="full", strict_seconds=30, **common)  # type: ignore[arg-type]
    assert (
        f"backend {FLEET_HEARTBEAT_TABLE}\n    stick-table type integer size 1 expire 30s store gpc0"
        in text
    )
    rule = f"!{{ int(1),in_table({FLEET_HEARTBEAT_TABLE}) }}"
    stale = text.index(rule)
    assert "str(node_stale)" in text
    # After the open routes (public /healthz is answered without a heartbeat) and before
    # the identity rules (no JWT work for a node that cannot vouch).
    assert text.index("http-request allow if scimgate_open_route") < stale
    assert stale < text.index("jwt_verify")  # the demo policy's identity is a JWT
    # The agent's command names the same table and key.
    assert f"set table {FLEET_HEARTBEAT_TABLE} key 1 data.gpc0 1" == HEARTBEAT_COMMAND


def test_without_strict_mode_nothing_is_rendered(common: dict[str, object]) -> None:
    text = render_config(mode="full", **common)  # type: ignore[arg-type]
    assert FLEET_HEARTBEAT_TABLE not in text and "node_stale" not in text


def test_fragment_names_the_table_it_needs(common: dict[str, object]) -> None:
    text = render_config(mode="fragment", strict_seconds=5, **common)  # type: ignore[arg-type]
    assert f"#     backend {FLEET_HEARTBEAT_TABLE}" in text
    assert "expire 5s" in text


@pytest.mark.parametrize("seconds", [0, -1, 86401])
def test_out_of_range_thresholds_are_render_errors(common: dict[str, object], seconds: int) -> None:
    with pytest.raises(RenderError, match="strict_seconds"):
        render_config(mode="full", strict_seconds=seconds, **common)  # type: ignore[arg-type]
