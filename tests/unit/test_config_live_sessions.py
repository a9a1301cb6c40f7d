"""``live_session_sweep_seconds`` in scimgate.yaml: how often the live-session cutter checks
every tracked stream against the store (0: never), bounds checked with a located error."""

from __future__ import annotations

from pathlib import Path

import pytest

from scimgate.config import ConfigError, load_settings


def test_default_and_values_read(tmp_path: Path) -> None:
    assert load_settings(directory=tmp_path).live_session_sweep_seconds == 30.0
    for text, value in (("0", 0.0), ("1", 1.0), ("2.5", 2.5), ("86400", 86400.0)):
        (tmp_path / "scimgate.yaml").write_text(f"live_session_sweep_seconds: {text}\n")
        assert load_settings(directory=tmp_path).live_session_sweep_seconds == value


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("0.5", "live_session_sweep_seconds must be 0 (no sweep) or from 1 to 86400 seconds"),
        ("-1", "live_session_sweep_seconds must be 0 (no sweep) or from 1 to 86400 seconds"),
        ("86401", "live_session_sweep_seconds must be 0 (no sweep) or from 1 to 86400 seconds"),
        ("soon", "live_session_sweep_seconds must be of type float"),
        ("true", "live_session_sweep_seconds must be of type float"),
    ],
)
def test_out_of_bounds_is_a_located_config_error(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "scimgate.yaml").write_text(
        f"log_level: INFO\nlive_session_sweep_seconds: {text}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_settings(directory=tmp_path)
    assert f"scimgate.yaml:2:1: {error}" in str(exc.value)
