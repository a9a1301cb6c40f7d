"""The demo certificate of the SCIM TLS frontend: signed by its CA, names the bind address,
renewed when it stops fitting."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scimgate.instance.democert import demo_certificate, demo_certificate_current
from scimgate.instance.layout import Layout, ensure_demo_certificate


def test_certificate_is_issued_by_the_ca_and_names_the_host() -> None:
    chain_and_key, ca_pem = demo_certificate("192.0.2.10")
    assert "PRIVATE KEY-----" in chain_and_key
    leaf, ca = x509.load_pem_x509_certificates(chain_and_key.encode())
    assert ca.public_bytes(Encoding.PEM).decode() == ca_pem
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1", "192.0.2.10", "::1",
    ]  # fmt: skip
    assert demo_certificate_current(chain_and_key.encode(), "192.0.2.10")
    assert demo_certificate_current(chain_and_key.encode(), "0.0.0.0")  # wildcard: loopback names
    assert not demo_certificate_current(chain_and_key.encode(), "198.51.100.1")
    assert not demo_certificate_current(b"not a certificate", "127.0.0.1")


def test_ensure_reuses_a_fitting_certificate_and_renews_one_that_does_not(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    ensure_demo_certificate(layout, "127.0.0.1")
    first = layout.scim_certificate.read_bytes()
    assert layout.scim_certificate.stat().st_mode & 0o777 == 0o600
    ensure_demo_certificate(layout, "127.0.0.1")
    assert layout.scim_certificate.read_bytes() == first
    ensure_demo_certificate(layout, "192.0.2.10")  # bound elsewhere now
    assert layout.scim_certificate.read_bytes() != first
    assert demo_certificate_current(layout.scim_certificate.read_bytes(), "192.0.2.10")
