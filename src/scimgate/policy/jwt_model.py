"""The policy's JWT identity settings (pure pydantic models): ``identity.jwt`` with a static
key or secret, or the issuer's JWKS (``identity.jwt.jwks``), the verified-token cache, the
scope claim's format and the token cut-off. Re-exported by ``policy.model``; rendered by
``policy.render_identity``, fetched by ``instance.jwks_keys``."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

CLAIM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
URLISH_RE = re.compile(r"^[A-Za-z0-9._~:/?&=+@%-]{1,512}$")
FILE_PATH_RE = re.compile(r"^[A-Za-z0-9._/+-]{1,1024}$")
HMAC_SECRET_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{32,512}$")

RSA_EC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512"
]


def _matching(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {what} {value!r}: must match {pattern.pattern}")
        return value

    return AfterValidator(check)


FilePath = Annotated[str, _matching(FILE_PATH_RE, "file path")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


class JwtVerifiedCache(_Model):
    """A cache of verified tokens: a stick table keyed by SHA-256 of the WHOLE bearer token.

    An entry is created only after ``jwt_verify`` accepted those exact bytes, and a hit skips
    only the signature check: alg/exp/nbf/iss/aud and the identity claim are still checked on
    every request, so a cached token still expires at its ``exp``."""

    enabled: bool = True
    ttl_seconds: int = Field(default=300, ge=1, le=3600)
    size: int = Field(default=1_000_000, ge=1, le=10_000_000)


#: What the JWKS mode accepts: RSA (>= 2048 bits) and EC P-256 / P-384 keys. ES512 (P-521)
#: is refused, HS* is never a JWKS key here (a shared secret). PS* (RSASSA-PSS) keys are
#: held, but rendered only for an HAProxy that verifies them (PSS_MIN_HAPROXY).
JWKS_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384")
JwksAlgorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]
PSS_ALGORITHMS = ("PS256", "PS384", "PS512")
# Measured here with real tokens: 2.6.12 refuses jwt_verify("PS256",...) at parse ("RSASSA-PSS
# JWS signing not managed yet"); 3.0.11 verifies PS256/384/512 (and refuses another key's
# signature). Support came in 2.8 (research round2/02-haproxy-jwt-jwks.md).
PSS_MIN_HAPROXY = (2, 8, 0)


def _every_jwks_algorithm() -> list[JwksAlgorithm]:
    return list(JWKS_ALGORITHMS)  # type: ignore[arg-type]


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``: the only hosts a JWKS may be fetched from over http."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_key_url(url: str, what: str) -> str:
    """https, or http to a loopback host only (the keys decide who gets in: a plain-http
    fetch over a network would let anyone on the path hand HAProxy their own key)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return url
    raise ValueError(f"{what} {url!r} must be https (http only to a loopback address)")


class JwksSource(_Model):
    """The issuer's signing keys, fetched from its JWKS (OIDC discovery or ``jwks_uri``) and
    written as one PUBLIC KEY PEM per ``kid``; the algorithm is pinned per key."""

    discovery: bool = True  # {issuer}/.well-known/openid-configuration names the jwks_uri
    jwks_uri: Annotated[str, _matching(URLISH_RE, "jwks_uri")] | None = None
    algorithms: list[JwksAlgorithm] = Field(default_factory=_every_jwks_algorithm, min_length=1)
    # how long a key the JWKS no longer lists is still accepted (tokens it signed live on)
    overlap_seconds: int = Field(default=3600, ge=0, le=7 * 86400)
    # refresh: the response's Cache-Control max-age, clamped to [min, max]
    min_refresh_seconds: int = Field(default=60, ge=1, le=86400)
    max_refresh_seconds: int = Field(default=3600, ge=1, le=86400)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    retries: int = Field(default=3, ge=0, le=10)
    max_bytes: int = Field(default=256 * 1024, ge=1024, le=4 * 1024 * 1024)
    max_keys: int = Field(default=32, ge=1, le=256)
    # a token whose kid matches no held key (and whose claims pass) makes HAProxy record the
    # kid; scimgate then fetches the JWKS at once, at most once per this many seconds
    refresh_on_unknown_kid: bool = True
    unknown_kid_refresh_seconds: int = Field(default=30, ge=1, le=3600)

    @model_validator(mode="after")
    def _where_from(self) -> JwksSource:
        if self.jwks_uri is not None:
            check_key_url(self.jwks_uri, "jwks_uri")
        elif not self.discovery:
            raise ValueError("jwks needs 'jwks_uri' when 'discovery' is false")
        if self.min_refresh_seconds > self.max_refresh_seconds:
            raise ValueError("min_refresh_seconds is above max_refresh_seconds")
        return self


class JwtSource(_Model):
    """Bearer JWT: signature checked by ``jwt_verify`` with a pinned algorithm; exp/nbf/iss/aud
    checked in config (``jwt_verify`` checks only the signature)."""

    algorithm: JwtAlgorithm | None = None  # static key or secret; per key with jwks
    public_key: FilePath | None = None  # PUBLIC KEY PEM, for RS*/ES*
    secret: Annotated[str, _matching(HMAC_SECRET_RE, "HMAC secret")] | None = None  # HS*
    jwks: JwksSource | None = None
    issuer: Annotated[str, _matching(URLISH_RE, "issuer")]
    audience: Annotated[str, _matching(URLISH_RE, "audience")]
    claim: Annotated[str, _matching(CLAIM_RE, "claim name")] = "email"
    scope_claim: Annotated[str, _matching(CLAIM_RE, "claim name")] = "scope"
    # Okta's `scp` is a JSON array, Entra's a space-separated string: `scp` must say which
    scope_claim_format: Literal["string", "array"] | None = None  # None: string
    scope_array_max_items: int = Field(default=16, ge=1, le=64)  # array items read
    leeway_seconds: int = Field(default=30, ge=0, le=600)
    verified_cache: JwtVerifiedCache = Field(default_factory=JwtVerifiedCache)
    # token cut-off: a token issued (iat) before the identity's last deprovisioning is refused
    # after a reprovisioning; a token without iat is refused
    cutoff: bool = False

    @model_validator(mode="after")
    def _key_matches_algorithm(self) -> JwtSource:
        if self.jwks is not None:
            if self.algorithm is not None or self.public_key is not None or self.secret:
                raise ValueError(
                    "'jwks' pins the algorithm per key: no 'algorithm', 'public_key' or 'secret'"
                )
            if self.jwks.discovery and self.jwks.jwks_uri is None:
                check_key_url(self.issuer, "issuer (for OIDC discovery)")
            return self
        if self.algorithm is None:
            raise ValueError("identity.jwt needs 'algorithm' (or 'jwks')")
        if self.algorithm in HMAC_ALGORITHMS:
            if self.secret is None or self.public_key is not None:
                raise ValueError(f"{self.algorithm} needs 'secret' (and no 'public_key')")
        elif self.public_key is None or self.secret is not None:
            raise ValueError(f"{self.algorithm} needs 'public_key' (and no 'secret')")
        return self
