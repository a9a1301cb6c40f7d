"""Policy: the policy file model and the pure compilers built on it.

Does: parse and validate the YAML policy file (identity source, policy groups, routes) into
typed models with ``file:line:column`` error locations; compile a SCIM user and its groups
into identity-map entries (HMAC pseudonym key -> comma-wrapped policy group slugs, with the
token cut-off's not-before); read a JWKS into per-kid PUBLIC KEY PEMs (``policy.jwks``);
render the HAProxy configuration (full ``haproxy.cfg`` or a frontend fragment) that
enforces the policy, including the live-session tracking rules and the test of which routes
a map value still allows (``sessions``); mint demo JWTs.

Does not: any I/O except ``load_policy`` reading the policy file and ``render_config``
checking that the JWT public key file(s) are ``PUBLIC KEY`` PEMs (``check_files=True``); it
never fetches a JWKS, talks to HAProxy, writes map or key files or touches the store.
"""

from scimgate.policy.compiler import (
    OVERLAY_MAP_NAME,
    OVERLAY_TOMBSTONE,
    entries_for_user,
    identity_key,
    identity_values,
    map_file_name,
    map_file_names,
    normalise_identity,
    policy_value,
    shard_of,
)
from scimgate.policy.model import (
    Policy,
    PolicyError,
    PolicyProblem,
    load_policy,
    parse_policy,
)
from scimgate.policy.render import RenderError, render_config

__all__ = [
    "OVERLAY_MAP_NAME",
    "OVERLAY_TOMBSTONE",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "RenderError",
    "entries_for_user",
    "identity_key",
    "identity_values",
    "load_policy",
    "map_file_name",
    "map_file_names",
    "normalise_identity",
    "parse_policy",
    "policy_value",
    "render_config",
    "shard_of",
]
