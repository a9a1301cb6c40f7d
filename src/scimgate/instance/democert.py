"""Demo TLS certificate for the SCIM endpoint's HAProxy frontend (in memory; no file I/O).

For demos and tests only, like ``jwtmint``: production sets ``scim_front.certificate`` to a
certificate a public CA issued. A throwaway CA signs a P-256 server certificate; the CA's key
is dropped at once, so the CA can sign nothing else. A client verifies with the CA PEM.
"""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEMO_CERT_DAYS = 398  # the longest a publicly trusted certificate may live
RENEW_BEFORE = datetime.timedelta(days=30)


def demo_names(host: str) -> list[x509.GeneralName]:
    """localhost, 127.0.0.1, ::1 and ``host`` (unless it is a wildcard address)."""
    addresses = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    if not ipaddress.ip_address(host).is_unspecified:
        addresses.add(ipaddress.ip_address(host))
    ordered = sorted(addresses, key=str)
    return [x509.DNSName("localhost"), *(x509.IPAddress(a) for a in ordered)]


def demo_certificate_current(certificate_pem: bytes, host: str) -> bool:
    """The certificate lives 30 more days and names ``host``."""
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    now = datetime.datetime.now(datetime.UTC)
    return cert.not_valid_after_utc - now > RENEW_BEFORE and all(
        name in names for name in demo_names(host)
    )


def demo_certificate(host: str) -> tuple[str, str]:
    """(certificate + CA certificate + private key PEM: HAProxy's ``crt``; the CA PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(DEMO_CERT_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scimgate demo CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(demo_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ca_pem = ca.public_bytes(pem)
    return (cert.public_bytes(pem) + ca_pem + key_pem).decode("ascii"), ca_pem.decode("ascii")
