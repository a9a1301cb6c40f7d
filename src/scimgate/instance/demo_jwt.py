"""JWTs as the IdP would issue them, for an instance whose policy takes a JWT identity:
signed with the instance's demo key (DIR/keys/jwt.key.pem), or the policy's secret for HS*
algorithms. For demos and tests (`scimgate jwt mint`); production JWTs come from the IdP."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scimgate.app import tokens
from scimgate.config import Settings
from scimgate.instance.layout import Layout
from scimgate.policy.jwtmint import mint_jwt
from scimgate.policy.model import HMAC_ALGORITHMS, Policy


class DemoJwtError(RuntimeError):
    """No JWT can be minted: the policy takes another identity, a bad lifetime, no key."""


def mint_demo_jwt(
    settings: Settings,
    policy: Policy,
    subject: str,
    *,
    scopes: Sequence[str] = (),
    ttl: str = "1h",
    key_file: Path | None = None,
    subject_claim: str | None = None,
    extra: dict[str, object] | None = None,
) -> str:
    """A JWT for ``subject``: the policy's identity claim is ``subject``, iss and aud come
    from the policy, iat/nbf are now and exp is now + ``ttl`` (30m, 1h, 2d ...).
    ``subject_claim`` names another claim for ``subject``; ``extra`` claims are added."""
    jwt = policy.identity.jwt
    if policy.identity.source != "jwt" or jwt is None:
        raise DemoJwtError(f"the policy's identity source is {policy.identity.source!r}, not 'jwt'")
    try:
        seconds = int(tokens.parse_duration(ttl).total_seconds())
    except tokens.TokenError as exc:
        raise DemoJwtError(str(exc)) from exc
    if jwt.algorithm in HMAC_ALGORITHMS and key_file is None:
        key: str = jwt.secret or ""
    else:
        path = key_file or Layout(settings.base_dir).private_key
        try:
            key = path.read_text()
        except OSError as exc:
            raise DemoJwtError(f"cannot read signing key {path}: {exc}") from exc
    claims: dict[str, object] = dict(extra or {})
    if scopes and jwt.scope_claim != "scope":
        claims[jwt.scope_claim] = " ".join(scopes)
    return mint_jwt(
        key,
        subject_claim=subject_claim or jwt.claim,
        identity=subject,
        algorithm=jwt.algorithm,
        issuer=jwt.issuer,
        audience=jwt.audience,
        scopes=scopes,
        ttl_seconds=seconds,
        extra=claims or None,
    )


def mint_agent_jwt(
    settings: Settings,
    policy: Policy,
    agent: str,
    *,
    on_behalf_of: str | None = None,
    scopes: Sequence[str] = (),
    ttl: str = "1h",
    key_file: Path | None = None,
) -> str:
    """A JWT for an agent, as Entra ID issues them: ``idtyp: app``, ``sub`` and ``azp`` =
    ``agent`` (client credentials, the agent acting alone). With ``on_behalf_of``, a
    delegated token instead (RFC 8693 §4.1): the user's identity claim is the user and
    ``act.sub`` the agent."""
    if on_behalf_of is not None:
        token = mint_demo_jwt(
            settings,
            policy,
            on_behalf_of,
            scopes=scopes,
            ttl=ttl,
            key_file=key_file,
            extra={"act": {"sub": agent}},
        )
        return token
    return mint_demo_jwt(
        settings,
        policy,
        agent,
        scopes=scopes,
        ttl=ttl,
        key_file=key_file,
        subject_claim="sub",
        extra={"azp": agent, "idtyp": "app"},
    )
