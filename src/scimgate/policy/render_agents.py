"""Rendered rules, agent side (only when the policy has ``identity.agents`` or a route sets
``rate_limit``): tell an agent's token from a person's, make the agent's pseudonym the
identity, look up the agent acting in a delegated token (RFC 8693 ``act.sub``), let agents
into the routes that ``allow_agents`` them, and per-identity rate limits.

How a token is read (JWT identity; ``identity.agents.token``, any test that holds):
``idtyp`` equal to the configured value (Entra ID app-only tokens carry ``idtyp: app``), the
user claim absent (Okta client-credentials tokens carry no ``email``), or a scope. The agent
is then named by the first of ``identity.agents.claims`` present in the token (``azp``,
``appid``, ``cid``, ``client_id``, ``sub``, ``oid``); its identity is ``agent:<claim>``, the
namespace ``policy.agents`` keys agents in, so an agent can never hold a person's entry.

A person's token with ``act.sub`` (RFC 8693 §4.1, delegation) is allowed only when both
hold: the person through ``allow_groups``, the acting agent (its own entry, looked up like
any identity) through ``allow_agents``. A suspended or unknown agent denies the request.

Rate limits: one stick table per limited route (its own backend), keyed by the pseudonym
key (``txn.scimgate_key``: the agent's or the person's), tracked through stick counter sc1
(sc2 is the verified-token cache's); over the limit -> 429, logged as
``decision=rate_limited``.
"""

from __future__ import annotations

from scimgate.policy.agents_model import AGENT_KEY_PREFIX, AGENT_TYPE_PREFIX, AgentIdentity
from scimgate.policy.compiler import OVERLAY_MAP_NAME, map_file_name
from scimgate.policy.model import ANY_GROUP, Policy, Route
from scimgate.policy.render_base import (
    PRINTABLE_TOKEN_REGEX,
    V_BEARER,
    V_GROUPS,
    V_HMAC,
    V_IDENTITY,
    V_KEY,
    acl_name,
    deny,
)

V_AGENT = "txn.scimgate_agent"  # bool: the token is an agent's
V_AGENT_CLAIM = "txn.scimgate_agent_claim"
V_DELEGATE = "txn.scimgate_delegate"  # act.sub of a person's token
V_DELEGATE_GROUPS = "txn.scimgate_delegate_groups"
RATE_SC = 1
AGENT_ACL = "scimgate_agent_token"
DELEGATED_ACL = "scimgate_delegated"


def agents_of(policy: Policy) -> AgentIdentity | None:
    """The policy's agent settings when agent tokens can be read (JWT identity only)."""
    if policy.identity.source != "jwt":
        return None
    return policy.identity.agents


def agent_string_claims(policy: Policy) -> list[str]:
    """Claims that must be JSON strings when present (checked with the identity claim)."""
    agents = agents_of(policy)
    return list(agents.claims) if agents is not None else []


def agent_token_rules(policy: Policy, unless_cached: str) -> list[str]:
    """Which token is an agent's, and its naming claim (every request: a cache hit too)."""
    agents = agents_of(policy)
    if agents is None:
        return []
    jwt = policy.identity.jwt
    assert jwt is not None
    bearer = f"var({V_BEARER})"
    test = agents.token
    out = ["# --- scimgate: agent tokens (identity.agents; render_agents.py) ---"]
    if test.idtyp is not None:
        out += [
            f"http-request set-var(txn.scimgate_jwt_idtyp) {bearer},jwt_payload_query('$.idtyp')",
            f"http-request set-var({V_AGENT}) bool(1) "
            f"if {{ var(txn.scimgate_jwt_idtyp) -m str {test.idtyp} }}",
        ]
    if test.without_user_claim:
        out.append(
            f"http-request set-var({V_AGENT}) bool(1) if !{{ var(txn.scimgate_jwt_identity) -m found }}"
        )
    if test.scope is not None:
        out += [
            f"http-request set-var-fmt(txn.scimgate_agent_scopes) \" %[{bearer},jwt_payload_query('$.{jwt.scope_claim}')] \"",
            f"http-request set-var({V_AGENT}) bool(1) "
            f"if {{ var(txn.scimgate_agent_scopes) -m sub ' {test.scope} ' }}",
        ]
    out.append(f"acl {AGENT_ACL} var({V_AGENT}) -m bool")
    for i, claim in enumerate(agents.claims):
        unset = f" !{{ var({V_AGENT_CLAIM}) -m found }}" if i else ""
        out.append(
            f"http-request set-var({V_AGENT_CLAIM}) {bearer},jwt_payload_query('$.{claim}') "
            f"if {AGENT_ACL}{unset}"
        )
    out += [
        f"acl scimgate_agent_claim_ok var({V_AGENT_CLAIM}) -m reg '{PRINTABLE_TOKEN_REGEX}'",
        "# the token names its principal: a person's identity claim, or an agent's claim",
        "http-request set-var(txn.scimgate_principal) bool(1) "
        f"if !{AGENT_ACL} scimgate_jwt_identity_ok",
        f"http-request set-var(txn.scimgate_principal) bool(1) if {AGENT_ACL} scimgate_agent_claim_ok",
        "acl scimgate_jwt_principal_ok var(txn.scimgate_principal) -m bool",
    ]
    if agents.delegation:
        # A person's token whose 'act' has no printable 'sub' is refused before it can be
        # cached (the payload is decoded on a miss): it never passes as the person alone.
        out += [
            "# RFC 8693 delegation: act.sub names the agent acting for the person",
            f"http-request set-var({V_DELEGATE}) {bearer},jwt_payload_query('$.act.sub') "
            f"if !{AGENT_ACL}",
            f"acl {DELEGATED_ACL} var({V_DELEGATE}) -m found",
            f"acl scimgate_delegate_ok var({V_DELEGATE}) -m reg '{PRINTABLE_TOKEN_REGEX}'",
            "acl scimgate_jwt_act_present var(txn.scimgate_jwt_payload) -m reg '\"act\"\\s*+:'",
            "http-request set-var(txn.scimgate_delegation_bad) bool(1) "
            f"if scimgate_jwt_act_present !scimgate_delegate_ok{unless_cached.replace(' if ', ' ')}",
            "acl scimgate_delegation_bad var(txn.scimgate_delegation_bad) -m bool",
        ]
    return out


def claims_ok_terms(policy: Policy, claims_ok: str) -> str:
    """The token checks' condition with agents: a principal instead of the user claim."""
    agents = agents_of(policy)
    if agents is None:
        return claims_ok
    out = claims_ok.replace("scimgate_jwt_identity_ok", "scimgate_jwt_principal_ok")
    return out + (" !scimgate_delegation_bad" if agents.delegation else "")


def identity_from_token(policy: Policy, identity_line: str, verified: str) -> list[str]:
    """Set the identity once the token is verified: the person's claim, or ``agent:<claim>``."""
    if agents_of(policy) is None:
        return [f"{identity_line} if {verified}"]
    return [
        f"http-request set-var(txn.scimgate_token_ok) bool(1) if {verified}",
        "acl scimgate_token_ok var(txn.scimgate_token_ok) -m bool",
        f"{identity_line} if scimgate_token_ok !{AGENT_ACL}",
        f"http-request set-var({V_IDENTITY}) str({AGENT_KEY_PREFIX}),concat(,{V_AGENT_CLAIM},) "
        f"if scimgate_token_ok {AGENT_ACL} scimgate_agent_claim_ok",
    ]


def delegate_lookup_rules(policy: Policy, map_dir: str, shards: int) -> list[str]:
    """The acting agent's entry, looked up like the caller's; 403 when it has none."""
    agents = agents_of(policy)
    if agents is None or not agents.delegation:
        return []
    when = DELEGATED_ACL
    key = "txn.scimgate_delegate_key"
    overlay = f"{map_dir}/{OVERLAY_MAP_NAME}"
    out = [
        "",
        "# --- scimgate: the agent acting in a delegated token (its own entry, or 403) ---",
        f"http-request set-var({key}) str({AGENT_KEY_PREFIX}),concat(,{V_DELEGATE},),lower,"
        f"hmac(sha256,{V_HMAC}),hex if {when}",
        f"http-request set-var({V_DELEGATE_GROUPS}) var({key}),map({overlay}) if {when}",
    ]
    if shards == 1:
        out.append(
            f"http-request set-var({V_DELEGATE_GROUPS}) var({key}),map({map_dir}/"
            f"{map_file_name(0, 1)}) if {when} !{{ var({V_DELEGATE_GROUPS}) -m found }}"
        )
    else:
        width = 1 if shards == 16 else 2
        for shard in range(shards):
            path = f"{map_dir}/{map_file_name(shard, shards)}"
            out.append(
                f"http-request set-var({V_DELEGATE_GROUPS}) var({key}),map({path}) if {when} "
                f"{{ var({key}) -m beg {shard:0{width}X} }} !{{ var({V_DELEGATE_GROUPS}) -m found }}"
            )
    return [
        *out,
        f"acl scimgate_delegate_known var({V_DELEGATE_GROUPS}) -m beg ,",
        *deny(403, "delegate_unknown", f"{when} !scimgate_delegate_known"),
    ]


def _agent_lacking(route: Route, groups_var: str) -> str | None:
    """The ACL terms an agent lacks for ``route`` ("" = lets any known agent in)."""
    allow = route.allow_agents
    if allow is None:
        return None
    if ANY_GROUP in allow.groups:
        return ""
    terms = [f"!{{ var({groups_var}) -m sub ,{g}, }}" for g in allow.groups]
    terms += [f"!{{ var({groups_var}) -m sub ,{AGENT_TYPE_PREFIX}{t}, }}" for t in allow.types]
    return " ".join(terms)


def route_agent_rules(policy: Policy, route: Route) -> list[str]:
    """A gated route's denies for agents, and for the agent acting in a delegated token."""
    if agents_of(policy) is None:
        return []
    is_route = acl_name("route", route.name)
    out: list[str] = []
    lacking = _agent_lacking(route, V_GROUPS)
    if lacking is None:
        out += deny(403, "agent_denied", f"{is_route} {AGENT_ACL}")
    elif lacking:
        out += deny(403, "agent_denied", f"{is_route} {AGENT_ACL} {lacking}")
    if not route.allow_groups:
        out += deny(403, "group_denied", f"{is_route} !{AGENT_ACL}")
    agents = policy.identity.agents
    if agents is not None and agents.delegation:
        acting = _agent_lacking(route, V_DELEGATE_GROUPS)
        if acting is None:
            out += deny(403, "delegation_denied", f"{is_route} {DELEGATED_ACL}")
        elif acting:
            out += deny(403, "delegation_denied", f"{is_route} {DELEGATED_ACL} {acting}")
    return out


def person_condition(policy: Policy) -> str:
    """The extra term limiting ``allow_groups`` denies to people's tokens."""
    return f" !{AGENT_ACL}" if agents_of(policy) is not None else ""


def rate_table(route: Route) -> str:
    return f"scimgate_rate_{route.name}"


def rate_limit_rules(policy: Policy) -> list[str]:
    """Per-identity limits of the routes that set ``rate_limit`` (after the allow checks)."""
    limited = [r for r in policy.routes if r.rate_limit is not None and not r.is_open]
    if not limited:
        return []
    out = [
        "",
        "# --- scimgate: per-identity rate limits (the pseudonym key, never the identity) ---",
    ]
    for route in limited:
        assert route.rate_limit is not None
        is_route = acl_name("route", route.name)
        out += [
            f"http-request track-sc{RATE_SC} var({V_KEY}) table {rate_table(route)} if {is_route}",
            *deny(
                429,
                "rate_limited",
                f"{is_route} {{ sc_http_req_rate({RATE_SC}) gt {route.rate_limit.requests} }}",
            ),
        ]
    return out


def rate_limit_tables(policy: Policy) -> dict[str, str]:
    """backend name -> its ``stick-table`` line, one per rate-limited route."""
    out: dict[str, str] = {}
    for route in policy.routes:
        if route.rate_limit is None or route.is_open:
            continue
        seconds = route.rate_limit.seconds
        out[rate_table(route)] = (
            f"stick-table type string len 64 size 1m expire {2 * seconds}s "
            f"store http_req_rate({seconds}s)"
        )
    return out
