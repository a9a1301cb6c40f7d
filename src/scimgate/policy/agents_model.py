"""The policy's agent settings (pure pydantic models): ``identity.agents`` (how a token is
told to be an agent's, which claims identify the agent), a route's ``allow_agents`` and
``rate_limit``. Compiled into entries by ``policy.agents``, into HAProxy rules by
``policy.render_agents``."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

AGENT_KEY_PREFIX = "agent:"
#: Slugs of agent types in map values; policy group slugs may not begin with it.
AGENT_TYPE_PREFIX = "at-"
AGENT_CLAIMS = ("sub", "azp", "appid", "cid", "client_id", "oid")
AGENT_KEY_ATTRIBUTES = ("subject", "agentUserName", "clientId", "name")
TYPE_RE = re.compile(r"^[a-z0-9_-]{1,29}$")
_SLUG = re.compile(r"^[a-z0-9_-]{1,32}$")
_PERIOD_RE = re.compile(r"^([1-9][0-9]{0,3})(s|m)$")


def _check(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {what} {value!r}: must match {pattern.pattern}")
        return value

    return AfterValidator(check)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)


AgentClaim = Literal["sub", "azp", "appid", "cid", "client_id", "oid"]
AgentKeyAttribute = Literal["subject", "agentUserName", "clientId", "name"]
DEFAULT_AGENT_CLAIMS: tuple[AgentClaim, ...] = ("azp", "appid", "cid", "client_id", "sub")
DEFAULT_AGENT_KEYS: tuple[AgentKeyAttribute, ...] = ("subject", "agentUserName", "clientId")


class AgentTokenTest(_Model):
    """How an agent's token is told from a person's (any test that holds says agent).

    ``idtyp``: the claim ``idtyp`` equals this (Entra ID app-only tokens: ``app``);
    ``without_user_claim``: the user claim (``identity.jwt.claim``) is absent (Okta
    client-credentials tokens carry no e-mail); ``scope``: the token carries this scope."""

    idtyp: Annotated[str, _check(re.compile(r"^[A-Za-z0-9_-]{1,32}$"), "idtyp")] | None = "app"
    without_user_claim: bool = True
    scope: Annotated[str, _check(re.compile(r"^[A-Za-z0-9._:/-]{1,128}$"), "scope")] | None = None


class AgentIdentity(_Model):
    """``identity.agents``: which claims identify an agent, matched against which of its
    attributes, and how an agent token is recognised."""

    claims: list[AgentClaim] = Field(
        default_factory=lambda: list(DEFAULT_AGENT_CLAIMS), min_length=1
    )
    key_attributes: list[AgentKeyAttribute] = Field(
        default_factory=lambda: list(DEFAULT_AGENT_KEYS), min_length=1
    )
    token: AgentTokenTest = Field(default_factory=AgentTokenTest)
    # RFC 8693 §4.1: a delegated token's ``act.sub`` names the agent acting for ``sub``.
    delegation: bool = True


class AllowAgents(_Model):
    """Which agents a route lets in: by policy group or by ``agentType`` (any listed)."""

    groups: list[Annotated[str, _check(re.compile(r"^(?:any|[a-z0-9_-]{1,32})$"), "group")]] = (
        Field(default_factory=list)
    )
    types: list[Annotated[str, _check(TYPE_RE, "agent type")]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> AllowAgents:
        if not self.groups and not self.types:
            raise ValueError("allow_agents needs 'groups' or 'types'")
        return self


class RateLimit(_Model):
    """At most ``requests`` per ``per`` (``10s``, ``1m``) for one identity on one route."""

    requests: int = Field(ge=1, le=1_000_000)
    per: Annotated[str, _check(_PERIOD_RE, "period")] = "10s"

    @property
    def seconds(self) -> int:
        match = _PERIOD_RE.fullmatch(self.per)
        assert match is not None
        return int(match.group(1)) * (60 if match.group(2) == "m" else 1)
