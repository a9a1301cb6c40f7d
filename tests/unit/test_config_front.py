"""scim_front, trusted_proxies and the direct port's limits in scimgate.yaml: parsed, typed,
and refused with an error that names the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scimgate.config import ConfigError, ScimFront, Settings, load_settings, parse_bind


def _load(tmp_path: Path, text: str) -> Settings:
    (tmp_path / "scimgate.yaml").write_text(text)
    return load_settings(directory=tmp_path)


def test_scim_front_mapping_is_parsed_with_defaults(tmp_path: Path) -> None:
    s = _load(
        tmp_path,
        "unix_socket: run/scimgate.sock\n"
        "trusted_proxies: ['10.0.0.0/8', '2001:db8::/32']\n"
        "scim_front:\n"
        "  bind: '[::]:8443'\n"
        "  certificate: tls/scim.pem\n"
        "  http_request_timeout: 2\n"
        "  rate_limit: {requests: 50}\n"
        "  allowed_sources: ['192.0.2.0/24', '198.51.100.7']\n",
    )
    assert s.unix_socket == tmp_path.resolve() / "run" / "scimgate.sock"
    assert s.trusted_proxies == ["10.0.0.0/8", "2001:db8::/32"]
    front = s.scim_front
    assert front is not None
    assert front.bind == "[::]:8443"
    assert front.certificate == tmp_path.resolve() / "tls" / "scim.pem"
    assert front.http_request_timeout == 2.0
    assert (front.rate_limit.requests, front.rate_limit.period) == (50, 60.0)
    assert front.allowed_sources == ["192.0.2.0/24", "198.51.100.7/32"]
    assert front.client_timeout == ScimFront().client_timeout


def test_absent_means_no_front_and_nothing_trusted(tmp_path: Path) -> None:
    s = _load(tmp_path, "port: 8001\n")
    assert s.scim_front is None and s.trusted_proxies == [] and s.unix_socket is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trusted_proxies: 10.0.0.0/8\n", "trusted_proxies must be a list"),
        ("trusted_proxies: ['10.1.2.3/8']\n", r"trusted_proxies #1 '10.1.2.3/8' is not a CIDR"),
        ("trusted_proxies: ['okta.com']\n", "is not a CIDR network"),
        ("client_header_timeout: 0\n", "client_header_timeout must be greater than 0"),
        ("max_connections: -1\n", "max_connections must be greater than 0"),
        ("scim_front: yes\n", "scim_front must be a mapping"),
        ("scim_front: {colour: blue}\n", "unknown scim_front setting"),
        ("scim_front: {bind: 'scim.example.com:443'}\n", "scim_front.bind"),
        ("scim_front: {bind: '127.0.0.1'}\n", "scim_front.bind"),
        ("scim_front: {bind: '::1:8443'}\n", "scim_front.bind"),
        ("scim_front: {http_request_timeout: soon}\n", "scim_front.http_request_timeout must be"),
        ("scim_front: {client_timeout: 0}\n", "scim_front.client_timeout must be greater than 0"),
        ("scim_front: {rate_limit: 100}\n", "scim_front.rate_limit must be a mapping"),
        ("scim_front: {rate_limit: {requests: -1}}\n", "scim_front.rate_limit.requests must be"),
        ("scim_front: {rate_limit: {burst: 3}}\n", "unknown scim_front.rate_limit setting"),
        ("scim_front: {allowed_sources: ['1.2.3.0/33']}\n", r"scim_front.allowed_sources #1"),
        ("scim_front: {certificate: 12}\n", "scim_front.certificate must be of type str"),
        (f"unix_socket: /tmp/{'x' * 120}.sock\n", "longer than a unix socket path"),
    ],
)
def test_bad_values_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_to_yaml_round_trips_the_front(tmp_path: Path) -> None:
    front = ScimFront(certificate=tmp_path / "tls" / "scim.pem", allowed_sources=["192.0.2.0/24"])
    front.rate_limit.requests = 7
    settings = Settings(
        base_dir=tmp_path,
        database_url="sqlite://",
        unix_socket=tmp_path / "scimgate.sock",
        trusted_proxies=["10.0.0.0/8"],
        scim_front=front,
    )
    text = settings.to_yaml()
    assert yaml.safe_load(text)["unix_socket"] == "scimgate.sock"  # relative to the file
    loaded = _load(tmp_path, text)
    assert loaded.scim_front == front
    assert loaded.unix_socket == tmp_path / "scimgate.sock"
    assert loaded.trusted_proxies == ["10.0.0.0/8"]


def test_parse_bind() -> None:
    assert parse_bind("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_bind("*:443") == ("0.0.0.0", 443)
    assert parse_bind("[::1]:8443") == ("::1", 8443)
    for bad in ("localhost:80", "127.0.0.1:0", "127.0.0.1:70000", "[127.0.0.1]:80"):
        with pytest.raises(ValueError):
            parse_bind(bad)
