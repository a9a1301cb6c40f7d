"""Settings loading: types are checked, unknown keys refused, secrets kept out of URLs."""

from pathlib import Path

import pytest

from scimgate.config import ConfigError, load_settings, redact_url


def test_wrong_type_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "scimgate.yaml").write_text("deprovision_alert_seconds: ten\n")
    with pytest.raises(ConfigError, match="deprovision_alert_seconds must be of type float"):
        load_settings(directory=tmp_path)


def test_int_accepted_where_float_goes_and_bool_is_not_an_int(tmp_path: Path) -> None:
    (tmp_path / "scimgate.yaml").write_text("read_your_writes_timeout: 3\n")
    assert load_settings(directory=tmp_path).read_your_writes_timeout == 3.0
    (tmp_path / "scimgate.yaml").write_text("port: true\n")
    with pytest.raises(ConfigError, match="port must be an integer"):
        load_settings(directory=tmp_path)


def test_unknown_key_refused(tmp_path: Path) -> None:
    (tmp_path / "scimgate.yaml").write_text("colour: blue\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(directory=tmp_path)


def test_redact_url_hides_the_password() -> None:
    out = redact_url("postgresql+psycopg://scimgate:s3cr3t@db.internal/scimgate")
    assert "s3cr3t" not in out
    assert out == "postgresql+psycopg://scimgate:***@db.internal/scimgate"


def test_target_config_file_is_absolute_and_only_written_when_set(tmp_path: Path) -> None:
    base = "targets:\n- name: edge\n  runtime_api: unix:/run/a.sock\n"
    (tmp_path / "scimgate.yaml").write_text(base + "  config_file: haproxy.cfg\n")
    with pytest.raises(ConfigError, match="config_file must be an absolute path"):
        load_settings(directory=tmp_path)
    (tmp_path / "scimgate.yaml").write_text(base + "  config_file: /etc/haproxy/h.cfg\n")
    settings = load_settings(directory=tmp_path)
    assert settings.targets[0].config_file == "/etc/haproxy/h.cfg"
    assert "config_file: /etc/haproxy/h.cfg" in settings.to_yaml()
    (tmp_path / "scimgate.yaml").write_text(base)
    assert "config_file:" not in load_settings(directory=tmp_path).to_yaml()
