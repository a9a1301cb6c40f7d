"""The readiness of an API replica of a fleet (docs/fleet.md, "Readiness"): it has no
targets of its own (the agents push to the nodes), so "no targets" is no reason for 503
there; a missing policy still is, in every role."""

from __future__ import annotations

from pathlib import Path

from scimgate.config import Settings
from scimgate.instance.wiring import enforcement_gaps


def test_api_role_needs_no_target_of_its_own(tmp_path: Path) -> None:
    settings = Settings(
        base_dir=tmp_path, database_url="sqlite://", policy_file=tmp_path / "policy.yaml"
    )
    assert settings.targets == []
    assert enforcement_gaps(settings, "api") == []
    all_role = enforcement_gaps(settings, "all")
    assert len(all_role) == 1 and all_role[0].startswith("no targets")


def test_api_role_still_needs_a_policy(tmp_path: Path) -> None:
    gaps = enforcement_gaps(Settings(base_dir=tmp_path, database_url="sqlite://"), "api")
    assert len(gaps) == 1 and gaps[0].startswith("no policy_file")
