"""The SCIM endpoint's HAProxy frontend: what each scim_front setting renders to (pure; the
live behaviour is tests/e2e/test_scim_front.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from scimgate.config import RateLimit, ScimFront
from scimgate.policy.jwtmint import demo_policy_yaml
from scimgate.policy.model import load_policy
from scimgate.policy.render import RenderError, render_config
from scimgate.policy.render_scim import render_scim_front, upstream_address


def _render(front: ScimFront, **kw: object) -> str:
    args: dict[str, object] = {
        "certificate": "/etc/scimgate/scim.pem",
        "upstream": "unix@/run/scimgate/scimgate.sock",
        "max_body_bytes": 4096,
        "bulk_max_payload_bytes": 8192,
        "check_files": False,
    }
    args.update(kw)
    return "\n".join(render_scim_front(front, **args))  # type: ignore[arg-type]


def test_defaults_render_tls_deadlines_limits_and_forwarding() -> None:
    text = _render(ScimFront(http_request_timeout=1.5, client_timeout=30))
    assert "bind 127.0.0.1:8443 ssl crt /etc/scimgate/scim.pem alpn http/1.1" in text
    assert "timeout http-request 1500ms" in text
    assert "timeout client 30s" in text
    assert "if { sc0_http_req_rate gt 1200 }" in text and "hdr Retry-After 60" in text
    assert "tcp-request connection reject if { sc0_conn_cur gt 100 }" in text
    assert "if scimgate_scim_bulk { req.hdr_val(content-length) gt 8192 }" in text
    assert "if !scimgate_scim_bulk { req.hdr_val(content-length) gt 4096 }" in text
    assert "server scimgate unix@/run/scimgate/scimgate.sock" in text
    # the client's forwarding headers go before HAProxy sets its own
    lines = text.splitlines()
    deleted = lines.index("    http-request del-header X-Forwarded-For")
    assert deleted < lines.index("    http-request set-header X-Forwarded-For %[src]")
    assert "http-request del-header Forwarded" in text
    # no allow-list configured: no 403 rule, every source tracked
    assert "deny_status 403" not in text
    assert "tcp-request connection track-sc0 src\n" in text + "\n"


def test_allowed_sources_and_no_rate_limit() -> None:
    text = _render(
        ScimFront(allowed_sources=["192.0.2.0/24", "2001:db8::/32"], rate_limit=RateLimit(0))
    )
    assert "acl scimgate_scim_allowed_src src 192.0.2.0/24 2001:db8::/32" in text
    assert "deny_status 403" in text and "unless scimgate_scim_allowed_src" in text
    # a refused source never gets a stick-table entry
    assert "tcp-request connection track-sc0 src if scimgate_scim_allowed_src" in text
    assert "deny_status 429" not in text


def test_refusals_are_scim_error_bodies() -> None:
    text = _render(ScimFront())
    for status in ("404", "413", "429"):
        assert (
            f'string \'{{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"{status}"'
            in text
        )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"certificate": "relative/scim.pem"}, "absolute path"),
        ({"certificate": "/etc/scim gate.pem"}, "absolute path"),
        ({"upstream": "unix@run/x.sock"}, "unix_socket must be an absolute path"),
        ({"upstream": "localhost:8000"}, "upstream"),
    ],
)
def test_unusable_arguments_are_render_errors(kw: dict[str, object], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        _render(ScimFront(), **kw)


def test_certificate_without_key_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "scim.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")
    with pytest.raises(RenderError, match="holds no private key"):
        _render(ScimFront(), certificate=str(cert), check_files=True)
    (tmp_path / "scim.pem.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    assert "ssl crt" in _render(ScimFront(), certificate=str(cert), check_files=True)
    with pytest.raises(RenderError, match="cannot be read"):
        _render(ScimFront(), certificate=str(tmp_path / "missing.pem"), check_files=True)


def test_upstream_address() -> None:
    assert (
        upstream_address(unix_socket="/run/s.sock", host="127.0.0.1", port=1) == "unix@/run/s.sock"
    )
    assert upstream_address(unix_socket=None, host="127.0.0.1", port=8000) == "127.0.0.1:8000"
    assert upstream_address(unix_socket=None, host="::1", port=8000) == "[::1]:8000"


def test_render_config_appends_the_front_to_a_full_config_only(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(demo_policy_yaml(public_key="jwt.pub.pem"))
    policy = load_policy(tmp_path / "policy.yaml")
    front = render_scim_front(
        ScimFront(),
        certificate="/etc/scim.pem",
        upstream="127.0.0.1:8000",
        max_body_bytes=1,
        bulk_max_payload_bytes=1,
        check_files=False,
    )
    common = {
        "map_dir": "/maps",
        "hmac_secret_b64": base64.b64encode(b"x" * 32).decode(),
        "check_files": False,
        "scim_frontend": front,
    }
    full = render_config(policy, mode="full", **common)  # type: ignore[arg-type]
    assert full.rstrip().endswith("server scimgate 127.0.0.1:8000 maxconn 100")
    assert "frontend fe_scimgate_scim" in full
    fragment = render_config(policy, mode="fragment", **common)  # type: ignore[arg-type]
    assert "frontend fe_scimgate_scim" not in fragment
    assert "scimgate haproxy render --mode scim" in fragment
    without = render_config(policy, mode="full", **{**common, "scim_frontend": ()})  # type: ignore[arg-type]
    assert "fe_scimgate_scim" not in without
