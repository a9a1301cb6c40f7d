"""Demo helpers: mint JWTs, generate an RSA key pair, the demo policy.

For demos and tests only: a real deployment verifies tokens minted by its IdP.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def generate_rsa_keypair(bits: int = 2048) -> tuple[str, str]:
    """A fresh RSA key pair: (PKCS#8 private key PEM, ``-----BEGIN PUBLIC KEY-----`` PEM).

    The public half is a SubjectPublicKeyInfo PEM, the only form ``jwt_verify`` accepts on
    HAProxy 2.6 (a certificate PEM fails every token, silently)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private_pem, public_pem


def mint_jwt(
    private_key_pem: str | bytes,
    *,
    subject_claim: str,
    identity: str,
    algorithm: str,
    issuer: str,
    audience: str,
    scopes: Iterable[str] = (),
    ttl_seconds: int = 300,
    kid: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A signed compact JWS: ``{subject_claim: identity, iss, aud, iat, nbf, exp, scope}``.

    ``scopes`` go into a space-separated ``scope`` claim (omitted when empty); ``extra``
    claims are merged last, so tests can override any claim (e.g. ``exp`` in the past).
    For HS* algorithms ``private_key_pem`` is the shared secret."""
    now = int(time.time())
    claims: dict[str, Any] = {
        subject_claim: identity,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
    }
    scope_list = list(scopes)
    if scope_list:
        claims["scope"] = " ".join(scope_list)
    if extra:
        claims.update(extra)
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, private_key_pem, algorithm=algorithm, headers=headers)


def demo_policy_yaml(
    *,
    public_key: str = "keys/jwt.pub.pem",
    issuer: str = "https://idp.example.com/",
    audience: str = "scimgate-demo",
    agents: bool = False,
    ws_port: int | None = None,
) -> str:
    """The demo policy: '/healthz' public (no identity asked), '/' for any active user,
    '/admin' for admins, '/eng' for engineering, '/api' for engineering and for agents in
    the Automation group (with ``agents``: the machine identities of docs/agents.md; agent
    tokens carry ``idtyp: app``); JWT identity (RS256, claim ``email``); every route answered
    by HAProxy itself. With ``ws_port``, '/ws' (any active user) goes to the WebSocket echo
    backend `scimgate up` runs on that loopback port."""
    ws_route = (
        f"""\
  - name: ws
    from: {{hosts: ["*"], path_prefix: /ws}}
    allow_groups: [any]
    to: {{backend: demo_ws_echo, servers: ["127.0.0.1:{ws_port}"]}}
"""
        if ws_port is not None
        else ""
    )
    text = f"""\
# scimgate demo policy: HAProxy answers every route itself (no backend needed).
identity:
  source: jwt
  jwt:
    algorithm: RS256                 # pinned literal: the token's own `alg` is never trusted
    public_key: {public_key}     # a PUBLIC KEY PEM (a certificate PEM fails silently on 2.6)
    issuer: {issuer}
    audience: {audience}
    claim: email                     # the claim whose value is the identity
    scope_claim: scope               # space-separated string claim
    leeway_seconds: 30
    cutoff: true                     # tokens issued before a deprovisioning stay refused
  key_attributes: [userName, emails] # SCIM attributes that produce identity keys

# policy group slug -> IdP groups (displayName or externalId)
groups:
  admins: {{idp_groups: ["Admins"]}}
  engineering: {{idp_groups: ["Engineering"]}}

# first match wins; no match = 403
routes:
  - name: health                     # open: no identity asked (load balancers, probes)
    from: {{hosts: ["*"], path_prefix: /healthz}}
    public: true
    to: {{return: "ok"}}
  - name: admin
    from: {{hosts: ["*"], path_prefix: /admin}}
    allow_groups: [admins]
    to: {{return: "admin area"}}
  - name: eng
    from: {{hosts: ["*"], path_prefix: /eng}}
    allow_groups: [engineering]
    to: {{return: "engineering area"}}
{ws_route}  - name: home
    from: {{hosts: ["*"], path_prefix: /}}
    allow_groups: [any]              # any active user
    to: {{return: "hello, active user"}}

default: deny
"""
    if not agents:
        return text
    # the agents block belongs under `identity:`, right after key_attributes (before the
    # groups comment, which must stay on its own line)
    text = text.replace("\n\n# policy group slug", "\n" + _DEMO_AGENTS + "\n# policy group slug", 1)
    text = text.replace(
        '  engineering: {idp_groups: ["Engineering"]}\n',
        '  engineering: {idp_groups: ["Engineering"]}\n  automation: {idp_groups: ["Automation"]}\n',
        1,
    )
    return text.replace("  - name: eng\n", _DEMO_API_ROUTE + "  - name: eng\n", 1)


# The demo's agents (docs/agents.md): a token with idtyp=app is an agent's, named by
# azp/cid/client_id/sub and matched to the agent's subject, agentUserName or clientId.
_DEMO_AGENTS = """\
  # machine identities (docs/agents.md): idtyp=app marks an agent's token
  agents:
    claims: [azp, cid, client_id, sub]
    key_attributes: [subject, agentUserName, clientId]
    token: {idtyp: app, without_user_claim: false}
"""
_DEMO_API_ROUTE = """\
  - name: api
    from: {hosts: ["*"], path_prefix: /api}
    allow_groups: [engineering]
    allow_agents: {groups: [automation]}
    to: {return: "api"}
"""
