"""A JWKS (RFC 7517) read into the keys HAProxy can verify with: one PUBLIC KEY PEM per
``kid``, its algorithm pinned.

Does: validate an OIDC discovery document (OpenID Connect Discovery 1.0 §4.3: its ``issuer``
must be the configured one) and a JWKS document; accept RSA keys of 2048 bits or more and EC
keys on P-256 / P-384 with a signing ``alg`` that fits the key (RFC 7518 §3.1); convert each
to a ``-----BEGIN PUBLIC KEY-----`` PEM (what ``jwt_verify`` reads on 2.6, research
round2/02-haproxy-jwt-jwks.md); report every key it refuses and why.
Does not: fetch anything (``instance.jwks_follower``) or write files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

#: A kid that can go into haproxy.cfg as an unquoted ``-m str`` pattern (base64url,
#: base64, hex and dotted kids of Okta, Entra, Google, Auth0 and Keycloak all fit).
KID_RE = re.compile(r"^[A-Za-z0-9._~+/=:-]{1,128}$")
MIN_RSA_BITS = 2048
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+={0,2}")

_EC_CURVES: dict[str, tuple[ec.EllipticCurve, str]] = {
    "P-256": (ec.SECP256R1(), "ES256"),
    "P-384": (ec.SECP384R1(), "ES384"),
}
_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")  # RFC 7518 §3.3, §3.5


class JwksError(ValueError):
    """The document is not a usable discovery document or JWKS at all."""


@dataclass(frozen=True)
class JwkKey:
    """One accepted signing key."""

    kid: str
    alg: str
    kty: str
    size: str  # "2048 bits" / "P-256"
    pem: str  # -----BEGIN PUBLIC KEY-----
    thumbprint: str  # SHA-256 of the PEM, hex: a changed key under the same kid shows

    @property
    def file_name(self) -> str:
        """A file name derived from the kid (which may hold '/' or '+')."""
        return "kid-" + hashlib.sha256(self.kid.encode()).hexdigest()[:24] + ".pem"


def _b64url_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{what}' is missing or not a string")
    if not _B64URL_RE.fullmatch(value):  # the decoder would skip foreign characters
        raise ValueError(f"'{what}' is not base64url")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"'{what}' is not base64url") from None
    return int.from_bytes(raw, "big")


def _pem(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _one_key(jwk: dict[str, Any], allowed: tuple[str, ...]) -> JwkKey:
    """The key, or ValueError saying why it is refused."""
    if "d" in jwk or "p" in jwk or "k" in jwk:
        raise ValueError("the JWKS publishes private or symmetric key material")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"'use' is {use!r}, not 'sig'")
    kty = jwk.get("kty")
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise ValueError("'alg' is not a string")
    if kty == "RSA":
        n = _b64url_int(jwk.get("n"), "n")
        e = _b64url_int(jwk.get("e"), "e")
        if n.bit_length() < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {n.bit_length()} bits (at least {MIN_RSA_BITS})")
        if e < 3 or e % 2 == 0:
            raise ValueError("RSA exponent is not an odd number >= 3")
        # Entra publishes no 'alg': RS256 is what its (and OIDC's default) tokens use
        alg = alg or "RS256"
        if alg not in _RSA_ALGS:
            raise ValueError(f"'alg' {alg} does not fit an RSA key (RS256/384/512, PS256/384/512)")
        key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = rsa.RSAPublicNumbers(e, n).public_key()
        size = f"{n.bit_length()} bits"
    elif kty == "EC":
        crv = jwk.get("crv")
        if crv not in _EC_CURVES:
            raise ValueError(f"EC curve {crv!r} is not accepted (P-256, P-384)")
        curve, curve_alg = _EC_CURVES[crv]
        alg = alg or curve_alg
        if alg != curve_alg:  # RFC 7518 §3.4: ES256 is P-256, ES384 is P-384
            raise ValueError(f"'alg' {alg} does not fit curve {crv} ({curve_alg})")
        x, y = _b64url_int(jwk.get("x"), "x"), _b64url_int(jwk.get("y"), "y")
        try:
            key = ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
        except ValueError:
            raise ValueError("the EC point is not on the curve") from None
        size = str(crv)
    else:
        raise ValueError(f"key type {kty!r} is not accepted (RSA, EC)")
    if alg not in allowed:
        raise ValueError(f"'alg' {alg} is not in the policy's jwks.algorithms")
    pem = _pem(key)
    kid = jwk["kid"]
    return JwkKey(kid, alg, kty, size, pem, hashlib.sha256(pem.encode()).hexdigest())


def parse_jwks(
    body: bytes, *, algorithms: Sequence[str], max_keys: int
) -> tuple[list[JwkKey], list[str]]:
    """The accepted keys in document order, and one line per refused key.

    Raises :class:`JwksError` when the body is no JWKS (not JSON, no ``keys`` list) or holds
    more than ``max_keys`` entries; a single bad key is refused, the others kept."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise JwksError("the JWKS is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError("the JWKS has no 'keys' list")
    entries = doc["keys"]
    if len(entries) > max_keys:
        raise JwksError(f"the JWKS lists {len(entries)} keys (limit {max_keys})")
    keys: list[JwkKey] = []
    refused: list[str] = []
    seen: set[str] = set()
    for index, jwk in enumerate(entries):
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        label = f"key {index}" + (f" (kid {kid!r})" if isinstance(kid, str) else "")
        if not isinstance(jwk, dict):
            refused.append(f"{label}: not a JSON object")
            continue
        if not isinstance(kid, str) or not KID_RE.fullmatch(kid):
            # HAProxy selects the key by kid: a key without one could never be chosen
            refused.append(f"{label}: no 'kid' of 1-128 characters [A-Za-z0-9._~+/=:-]")
            continue
        if kid in seen:
            # two keys under one kid: which one signed is unknowable, so neither is used
            refused.append(f"{label}: duplicate kid")
            keys = [k for k in keys if k.kid != kid]
            continue
        seen.add(kid)
        try:
            keys.append(_one_key(jwk, tuple(algorithms)))
        except ValueError as exc:
            refused.append(f"{label}: {exc}")
    return keys, refused


def jwks_uri_from_discovery(body: bytes, issuer: str) -> str:
    """The ``jwks_uri`` of an OIDC discovery document whose ``issuer`` is ``issuer``."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise JwksError("the discovery document is not JSON") from None
    if not isinstance(doc, dict):
        raise JwksError("the discovery document is not a JSON object")
    # OpenID Connect Discovery 1.0 §4.3: the issuer returned MUST be identical to the one
    # the document was fetched for (else a mix-up of issuers)
    if doc.get("issuer") != issuer:
        raise JwksError(f"the discovery document's issuer {doc.get('issuer')!r} is not {issuer!r}")
    uri = doc.get("jwks_uri")
    if not isinstance(uri, str) or not uri:
        raise JwksError("the discovery document has no 'jwks_uri'")
    return uri


def discovery_url(issuer: str) -> str:
    """OpenID Connect Discovery 1.0 §4: the issuer, then ``/.well-known/openid-configuration``."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


_MAX_AGE_RE = re.compile(r"(?:^|,)\s*(no-store|no-cache|max-age\s*=\s*\"?(\d{1,10})\"?)", re.I)


def cache_seconds(cache_control: str | None, *, low: int, high: int) -> int:
    """When to fetch again: the Cache-Control ``max-age`` (RFC 9111 §5.2.2.1) clamped to
    [low, high]; ``no-store``/``no-cache`` mean the floor; no header means the ceiling."""
    if not cache_control:
        return high
    for match in _MAX_AGE_RE.finditer(cache_control):
        if match.group(2) is not None:
            return max(low, min(high, int(match.group(2))))
        return low
    return high


@dataclass(frozen=True)
class PinnedKey:
    """A key as the rendered config uses it: its kid, pinned algorithm and PEM file path.
    ``verifiable`` False: the HAProxy it is rendered for cannot verify its algorithm (PS* before
    2.8): the config names the kid as known, but verifies nothing with it."""

    kid: str
    alg: str
    path: str
    verifiable: bool = True
