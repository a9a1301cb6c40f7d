"""Agents in the policy (pure): how a token is told to be an agent's, which claims identify
the agent, which routes let agents in, per-identity rate limits; and an agent's map entries.

Does: an agent's identity keys and value (``agent_entries``); the models are in
``policy.agents_model``.
Does not: render HAProxy configuration (``render_agents``), read the store.

Keys are pseudonyms in their own namespace: HMAC of ``agent:<identity>``, so an agent whose
``subject`` equals a person's userName can never take that person's entry (and the other way
round). HAProxy computes the same: ``str(agent:),concat(,txn.<claim var>,),lower,hmac(…)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scimgate.policy.agents_model import (
    AGENT_KEY_PREFIX,
    AGENT_TYPE_PREFIX,
    TYPE_RE,
    AgentIdentity,
)
from scimgate.policy.compiler import (
    identity_key,
    is_active,
    is_usable_identity,
    normalise_identity,
    policy_value,
)
from scimgate.policy.model import Policy


def agent_type_slug(agent_type: str) -> str | None:
    lowered = normalise_identity(agent_type)
    return AGENT_TYPE_PREFIX + lowered if TYPE_RE.fullmatch(lowered) else None


def agent_identity_key(identity: str, secret: bytes) -> str:
    return identity_key(AGENT_KEY_PREFIX + normalise_identity(identity), secret)


def _identities(
    agent: Mapping[str, Any], client_ids: Iterable[str], attrs: Sequence[str]
) -> list[str]:
    out: list[str] = []
    for attribute in attrs:
        raw: list[Any] = list(client_ids) if attribute == "clientId" else [agent.get(attribute)]
        for value in raw:
            if not isinstance(value, str):
                continue
            text = normalise_identity(value)
            if text and is_usable_identity(text) and text not in out:
                out.append(text)
    return out


def agent_entries(
    agent: Mapping[str, Any],
    idp_groups: Iterable[Mapping[str, Any]],
    client_ids: Iterable[str],
    suspended: bool,
    agents: AgentIdentity | None,
    policy: Policy,
    route_types: frozenset[str],
    secret: bytes,
) -> dict[str, str]:
    """Map entries of one agent: ``{}`` when the policy has no ``identity.agents``, or the
    agent is inactive or suspended (its owners gone). The value holds the policy groups of
    its IdP groups and ``at-<agentType>`` when a route allows that type."""
    if agents is None or suspended or not is_active(agent):
        return {}
    names = [str(g.get(f)) for g in idp_groups for f in ("displayName", "externalId") if g.get(f)]
    value = policy_value(names, policy)
    kind = agent.get("agentType")
    slug = agent_type_slug(kind) if isinstance(kind, str) else None
    if slug is not None and slug[len(AGENT_TYPE_PREFIX) :] in route_types:
        value = "," + "".join(f"{s}," for s in sorted([*value.strip(",").split(","), slug]) if s)
    return {
        agent_identity_key(identity, secret): value
        for identity in _identities(agent, client_ids, agents.key_attributes)
    }
