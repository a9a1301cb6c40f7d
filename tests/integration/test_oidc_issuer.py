"""The local OIDC issuer the browser SSO test signs in at (tests/support/oidc_issuer.py), over
real loopback HTTP: discovery, the code flow with PKCE, ID tokens that verify against the
published JWKS, and key rotation."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator

import httpx
import jwt
import pytest

from tests.support.oidc_issuer import OidcIssuer

REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture
def issuer() -> Iterator[OidcIssuer]:
    with OidcIssuer() as running:
        running.add_user("alice@example.com", name="Alice")
        yield running


def _code(issuer: OidcIssuer, challenge: str, **extra: str) -> str:
    r = httpx.get(f"{issuer.url}/authorize", params={
        "response_type": "code", "client_id": "app", "redirect_uri": REDIRECT,
        "scope": "openid email", "state": "s1", "nonce": "n1",
        "code_challenge": challenge, "code_challenge_method": "S256", **extra,
    })  # fmt: skip
    assert r.status_code == 302
    location = httpx.URL(r.headers["location"])
    assert str(location).startswith(REDIRECT) and location.params["state"] == "s1"
    return location.params.get("code") or "error:" + location.params["error"]


def _verify(issuer: OidcIssuer, token: str, audience: str) -> dict[str, object]:
    keys = httpx.get(f"{issuer.url}/jwks").json()["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in keys if k["kid"] == kid)
    key = jwt.PyJWK(jwk).key
    return dict(jwt.decode(token, key, algorithms=["RS256"], audience=audience,
                           issuer=issuer.url))  # fmt: skip


def test_code_flow_with_pkce_and_rotation(issuer: OidcIssuer) -> None:
    client = issuer.register_client("app", REDIRECT)
    discovery = httpx.get(f"{issuer.url}/.well-known/openid-configuration").json()
    assert (
        discovery["issuer"] == issuer.url
        and "S256" in discovery["code_challenge_methods_supported"]
    )

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")

    issuer.sign_in_as(None)  # nobody signed in: login_required back to the client
    assert _code(issuer, challenge.decode()) == "error:login_required"
    issuer.sign_in_as("alice@example.com")

    def redeem(code: str, code_verifier: str) -> httpx.Response:
        return httpx.post(f"{issuer.url}/token", auth=(client.client_id, client.client_secret),
                          data={"grant_type": "authorization_code", "code": code,
                                "redirect_uri": REDIRECT, "code_verifier": code_verifier})  # fmt: skip

    code = _code(issuer, challenge.decode())
    assert redeem(code, "wrong-verifier").json()["error"] == "invalid_grant"
    code = _code(issuer, challenge.decode())
    tokens = redeem(code, verifier).json()
    assert redeem(code, verifier).json()["error"] == "invalid_grant"  # a code is single-use
    claims = _verify(issuer, tokens["id_token"], "app")
    assert claims["email"] == "alice@example.com" and claims["nonce"] == "n1"

    old_kid = jwt.get_unverified_header(tokens["id_token"])["kid"]
    new_key = issuer.rotate_key()
    kids = [k["kid"] for k in httpx.get(f"{issuer.url}/jwks").json()["keys"]]
    assert kids == [old_kid, new_key.kid]  # the old key is still published
    tokens = redeem(_code(issuer, challenge.decode()), verifier).json()
    assert jwt.get_unverified_header(tokens["id_token"])["kid"] == new_key.kid
    assert _verify(issuer, tokens["id_token"], "app")["sub"] == "alice@example.com"
    issuer.retire_old_keys()
    assert [k["kid"] for k in httpx.get(f"{issuer.url}/jwks").json()["keys"]] == [new_key.kid]
