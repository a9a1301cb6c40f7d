"""Identities → map entries: the policy as the use cases need it.

Does: compute each user's HAProxy map entries under the policy (``policy.compiler``) from
the user's stored row and direct groups, and hand them to the store, which diffs them
against what it holds and logs every change (``store.outbox``); the whole directory again
after a policy change (``apply_policy``, audited).
Does not: write SQL (``store``), decide the entry grammar (``policy``), or send anything to
HAProxy (the sync engine follows the change log).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from scimgate.app.agents import is_suspended
from scimgate.audit import log as audit
from scimgate.policy.agents import agent_entries
from scimgate.policy.compiler import entries_for_user, with_not_before
from scimgate.policy.model import Policy
from scimgate.scim.render import user_resource
from scimgate.store import agents as st_agents, outbox, resources as rs
from scimgate.store.db import Database

# (user resource, the user's IdP groups) -> {identity_key: value}; {} for an inactive user.
EntriesFn = Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, str]]
# (agent resource, its IdP groups, its client ids, suspended) -> {identity_key: value}
AgentEntriesFn = Callable[[dict[str, Any], list[dict[str, Any]], list[str], bool], dict[str, str]]


class PolicyEnforcement:
    def __init__(self, policy: Policy, secret: bytes) -> None:
        self.policy = policy
        self.secret = secret
        jwt = policy.identity.jwt
        #: token cut-off: entries carry their identity's last deprovisioning time
        self.cutoff = policy.identity.source == "jwt" and jwt is not None and jwt.cutoff
        self._idp_groups = {g for group in policy.groups.values() for g in group.idp_groups}
        self._route_types = frozenset(
            t for r in policy.routes if r.allow_agents is not None for t in r.allow_agents.types
        )

    def entries(self, user: dict[str, Any], idp_groups: list[dict[str, Any]]) -> dict[str, str]:
        return entries_for_user(user, idp_groups, self.policy, self.secret)

    def agent_entries(
        self,
        agent: dict[str, Any],
        idp_groups: list[dict[str, Any]],
        client_ids: list[str],
        suspended: bool,
    ) -> dict[str, str]:
        return agent_entries(
            agent,
            idp_groups,
            client_ids,
            suspended,
            self.policy.identity.agents,
            self.policy,
            self._route_types,
            self.secret,
        )

    def group_relevant(self, display_name: str | None, external_id: str | None) -> bool:
        return display_name in self._idp_groups or external_id in self._idp_groups


def _with_cutoffs(entries: dict[str, str], cutoffs: dict[str, int]) -> dict[str, str]:
    return {k: with_not_before(v, cutoffs.get(k)) for k, v in entries.items()}


def refresh_users(
    conn: Connection,
    user_ids: Iterable[str],
    entries_fn: EntriesFn,
    base_url: str = "",
    *,
    cutoff: bool = False,
) -> list[outbox.MapChange]:
    """Recompute the entries of these users (in ``conn``'s write transaction) and log every
    key that changed; a user gone from the store loses its entries. ``cutoff``: each entry
    carries its key's last deprovisioning time, and removed keys record theirs."""

    def desired() -> Iterator[tuple[str, dict[str, str]]]:
        for user_id in dict.fromkeys(user_ids):
            row = rs.find_user(conn, user_id)
            if row is None:
                yield user_id, {}
                continue
            user = user_resource(row, base_url)
            entries = entries_fn(user, rs.idp_groups_of_user(conn, user_id))
            if cutoff and entries:
                entries = _with_cutoffs(entries, outbox.cutoffs_of(conn, entries))
            yield user_id, entries

    return outbox.log_user_entries(conn, desired(), record_cutoffs=cutoff)


def agent_desired(
    conn: Connection, agent_id: str, agent_entries_fn: AgentEntriesFn | None
) -> dict[str, str] | None:
    """An agent's desired entries (None: no agent has this id). Suspended = it names owners
    and none of them stands, or its parent is out (``app.agents``)."""
    row = st_agents.find_agent(conn, agent_id)
    if row is None:
        return None
    if agent_entries_fn is None:
        return {}
    suspended = is_suspended(conn, agent_id)
    return agent_entries_fn(
        {**row.attrs, "active": row.active},
        rs.idp_groups_of_user(conn, agent_id),
        st_agents.client_ids_of_agent(conn, agent_id),
        suspended,
    )


def refresh_identities(
    conn: Connection,
    ids: Iterable[str],
    entries_fn: EntriesFn,
    agent_entries_fn: AgentEntriesFn | None,
    base_url: str = "",
    *,
    cutoff: bool = False,
) -> list[outbox.MapChange]:
    """:func:`refresh_users` over users and agents (an id is one or the other). ``cutoff``
    applies to both: an agent's ``agent:<claim>`` keys carry their not-before like a
    person's keys (client-credentials tokens of Entra ID and Okta carry ``iat``)."""

    def desired() -> Iterator[tuple[str, dict[str, str]]]:
        for identity_id in dict.fromkeys(ids):
            row = rs.find_user(conn, identity_id)
            if row is not None:
                user = user_resource(row, base_url)
                entries = entries_fn(user, rs.idp_groups_of_user(conn, identity_id))
            else:
                entries = agent_desired(conn, identity_id, agent_entries_fn) or {}
            if cutoff and entries:
                entries = _with_cutoffs(entries, outbox.cutoffs_of(conn, entries))
            yield identity_id, entries

    return outbox.log_user_entries(conn, desired(), record_cutoffs=cutoff)


def rebuild_all(
    conn: Connection,
    entries_fn: EntriesFn,
    batch: int = 2000,
    agent_entries_fn: AgentEntriesFn | None = None,
    *,
    cutoff: bool = False,
) -> list[outbox.MapChange]:
    """Recompute every user's entries (after a policy change); log only the differences.

    Set-wise: every membership with its group in one read, every user in id order in one
    cursor, the pure ``entries_fn`` per user in Python; the store diffs and writes in
    batches of ``batch`` (``outbox.rebuild_entries``). The result and the change log, order
    included, are those of :func:`refresh_users` over every user in id order followed by
    the owners of entries whose user is gone."""

    def desired() -> Iterator[tuple[str, dict[str, str]]]:
        groups_by_user = rs.idp_groups_by_user(conn)
        cutoffs = outbox.cutoffs_of(conn) if cutoff else {}
        for row in rs.all_users(conn):
            entries = entries_fn(user_resource(row, ""), groups_by_user.get(row.id, []))
            yield row.id, _with_cutoffs(entries, cutoffs) if cutoffs else entries
        # Then the agents, in id order (few, next to people: one read each is fine).
        agent_ids = [a.id for a in st_agents.all_agents(conn)]
        for agent_id in agent_ids:
            entries = agent_desired(conn, agent_id, agent_entries_fn) or {}
            yield agent_id, _with_cutoffs(entries, cutoffs) if cutoffs else entries

    return outbox.rebuild_entries(conn, desired(), batch, record_cutoffs=cutoff)


def apply_policy(db: Database, policy: Policy, secret: bytes, policy_file: Path) -> dict[str, str]:
    """Recompute every user's entries under ``policy`` (a policy edited between runs takes
    effect; only differences are logged, and audited as ``policy.apply``) and return the
    desired map."""
    enforcement = PolicyEnforcement(policy, secret)
    with db.write() as conn:
        changes = rebuild_all(
            conn,
            enforcement.entries,
            agent_entries_fn=enforcement.agent_entries,
            cutoff=enforcement.cutoff,
        )
        if changes:
            audit.ensure_head(conn)
            digest = hashlib.sha256(policy_file.read_bytes()).hexdigest()
            audit.append(
                conn,
                "policy.apply",
                operation="rebuild",
                detail={
                    "policy_file": str(policy_file),
                    "policy_sha256": digest,
                    "map_changes": len(changes),
                    "deprovisions": sum(c.deprovision for c in changes),
                },
            )
    with db.read() as conn:
        return outbox.desired_entries(conn)
