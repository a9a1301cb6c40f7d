"""Table definitions (SQLAlchemy Core). Migrations in ``migrations/`` must match these."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# JSON on SQLite, JSONB on PostgreSQL: both support extraction in SQL, which the filter
# compiler (store/filter_sql.py) relies on.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")
# Autoincrement primary keys: INTEGER on SQLite (rowid alias), BIGINT on PostgreSQL.
SeqInt = BigInteger().with_variant(Integer(), "sqlite")

# Timestamps are ISO-8601 UTC strings with a fixed width ("2026-11-28T13:21:02.123456Z"):
# portable, and they compare correctly as text on both databases (SCIM gt/lt on dateTime).

users = Table(
    "scim_users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_name", Text, nullable=False),
    # RFC 7643 §4.1.1: userName is unique and case-insensitive.
    Column("user_name_lower", Text, nullable=False, unique=True),
    Column("external_id", Text, nullable=True, index=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("display_name", Text, nullable=True),
    # Everything else of the resource (core + extension attributes), as SCIM JSON without
    # id, meta, groups and password.
    Column("attrs", JsonDoc, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("created", String(32), nullable=False),
    Column("last_modified", String(32), nullable=False),
)

groups = Table(
    "scim_groups",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("display_name", Text, nullable=False),
    Column("display_name_lower", Text, nullable=False, unique=True),
    Column("external_id", Text, nullable=True, index=True),
    Column("attrs", JsonDoc, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("created", String(32), nullable=False),
    Column("last_modified", String(32), nullable=False),
)

# Memberships in their own table, indexed both ways: a member add/remove is one row, and
# "which groups is this user in" is an index range scan.
members = Table(
    "scim_members",
    metadata,
    Column(
        "group_id", String(36), ForeignKey("scim_groups.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("member_id", String(36), primary_key=True),
    Column("member_type", String(8), nullable=False, default="User"),
    Index("ix_scim_members_member", "member_id", "group_id"),
)

# Agents (draft-abbey-scim-agent-extension-00, draft-wzdk-scim-agent-resource-00): a
# machine identity, keyed in HAProxy by its subject / agentUserName (policy.agents).
agents = Table(
    "scim_agents",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("name_lower", Text, nullable=False, index=True),
    Column("agent_user_name", Text, nullable=True),
    # wzdk-00 §2: agentUserName is the identifier, unique like userName (several NULLs fine).
    Column("agent_user_name_lower", Text, nullable=True, unique=True),
    Column("subject", Text, nullable=True, index=True),
    Column("external_id", Text, nullable=True, index=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("display_name", Text, nullable=True),
    Column("attrs", JsonDoc, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("created", String(32), nullable=False),
    Column("last_modified", String(32), nullable=False),
)

agentic_applications = Table(
    "scim_agentic_applications",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", Text, nullable=False),
    Column("name_lower", Text, nullable=False, index=True),
    Column("external_id", Text, nullable=True, index=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("display_name", Text, nullable=True),
    Column("attrs", JsonDoc, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("created", String(32), nullable=False),
    Column("last_modified", String(32), nullable=False),
)

# An agent's links, indexed from the other side too: relation "owner" (other = a User or
# Group id, kind = "User"/"Group"; kept when the owner is deleted, so the agent stays
# suspended) and "application" (other = an AgenticApplication id, kind = owned/authorized/
# guest). "Which agents does this user own" is one index range scan (the owner cascade).
agent_links = Table(
    "scim_agent_links",
    metadata,
    Column("agent_id", String(36), primary_key=True),
    Column("other_id", String(36), primary_key=True),
    Column("relation", String(16), primary_key=True),
    Column("kind", String(16), nullable=False),
    Index("ix_scim_agent_links_other", "other_id", "relation"),
)

tokens = Table(
    "api_tokens",
    metadata,
    Column("id", SeqInt, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created", String(32), nullable=False),
    Column("expires", String(32), nullable=True),
    Column("last_used", String(32), nullable=True),
    Column("revoked", String(32), nullable=True),
    # Rotation: the previous secret keeps working until previous_expires.
    Column("previous_hash", String(64), nullable=True, index=True),
    Column("previous_expires", String(32), nullable=True),
)

# Desired HAProxy state: one row per identity key (HMAC pseudonym) of an active user.
map_entries = Table(
    "map_entries",
    metadata,
    Column("identity_key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("user_id", String(36), nullable=False, index=True),
)

# Token cut-off (policy identity.jwt.cutoff): per identity key, the first second after its
# last deprovisioning; tokens issued (iat) before it stay refused after a reprovisioning.
identity_cutoffs = Table(
    "identity_cutoffs",
    metadata,
    Column("identity_key", String(64), primary_key=True),
    Column("not_before", BigInteger, nullable=False),
)

# The outbox: one row per changed key, in commit order. value NULL means "delete".
change_log = Table(
    "change_log",
    metadata,
    Column("seq", SeqInt, primary_key=True, autoincrement=True),
    Column("identity_key", String(64), nullable=False),
    Column("value", Text, nullable=True),
    Column("user_id", String(36), nullable=True),
    Column("deprovision", Boolean, nullable=False, default=False),
    Column("created", String(32), nullable=False),
)

targets = Table(
    "sync_targets",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("cursor", BigInteger, nullable=False, default=0),
    Column("last_resync", String(32), nullable=True),
    Column("last_drift_check", String(32), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("entries", Integer, nullable=True),
    # Live sessions (sync/sessions.py), written by the running engine's cutter: streams cut
    # since it started (the process's scimgate_sessions_cut_total), when it started, the
    # last cut, and the last sweep's time and outcome.
    Column("sessions_cut", BigInteger, nullable=True),
    Column("sessions_cut_since", String(32), nullable=True),
    Column("last_session_cut", String(32), nullable=True),
    Column("last_session_sweep", String(32), nullable=True),
    Column("last_session_sweep_result", Text, nullable=True),
)

# The fleet: one row per `scimgate agent` (one HAProxy node), written by the agent only.
# ``cursor`` is the last change the node confirmed; ``heartbeat_epoch`` is the database's
# clock at the last beat (PostgreSQL: clock_timestamp()), so that liveness is judged on one
# clock whatever the agents' and replicas' clocks say.
fleet_nodes = Table(
    "fleet_nodes",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("cursor", BigInteger, nullable=False),
    Column("worker_pid", Integer, nullable=True),
    Column("haproxy_version", String(64), nullable=True),
    Column("reachable", Boolean, nullable=False),
    Column("fail_closed", Boolean, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("started", String(32), nullable=False),
    Column("heartbeat", String(32), nullable=False),
    Column("heartbeat_epoch", Float, nullable=False),
)

# When each change took effect on each target (deprovisions are what audits ask about).
confirmations = Table(
    "sync_confirmations",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("target", String(128), primary_key=True),
    Column("applied", String(32), nullable=False),
)

# One row (id=1): the newest audit event's seq and hash. Every write transaction locks it
# first, which serialises writers on PostgreSQL so that audit and change-log order is commit
# order (a follower reading "seq > cursor" can then never skip a late-committing row).
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

#: The head row before the first event: seq 0 and the hash the chain starts from (the audit
#: trail's genesis hash; a unit test holds the two equal). The store seeds it with the schema
#: (``migrate.upgrade``): writers lock it, so it must exist before the first write.
AUDIT_HEAD_START = {"id": 1, "seq": 0, "hash": "0" * 64}

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", SeqInt, primary_key=True, autoincrement=True),
    Column("ts", String(32), nullable=False),
    Column("kind", String(64), nullable=False, index=True),
    Column("actor", String(128), nullable=True),
    Column("client", String(128), nullable=True),
    Column("user_agent", Text, nullable=True),
    Column("request_id", String(64), nullable=True),
    Column("resource_type", String(32), nullable=True),
    Column("resource_id", String(36), nullable=True, index=True),
    Column("operation", String(32), nullable=True),
    Column("detail", JsonDoc, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

# The console's people counts (overview, people page): count(*) WHERE active on an index,
# not a scan of every row's JSON.
Index("ix_scim_users_active", users.c.active)

# The admin console (issue 14): admins sign in with a name and a random secret, stored only
# as its SHA-256 (like api_tokens); a session is a random cookie secret, stored hashed too.
admin_accounts = Table(
    "admin_accounts",
    metadata,
    Column("id", SeqInt, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created", String(32), nullable=False),
    Column("rotated", String(32), nullable=True),
    Column("revoked", String(32), nullable=True),
    Column("last_sign_in", String(32), nullable=True),
)

admin_sessions = Table(
    "admin_sessions",
    metadata,
    Column("secret_hash", String(64), primary_key=True),
    Column("admin_id", SeqInt, nullable=False, index=True),
    Column("created", String(32), nullable=False),
    Column("expires", String(32), nullable=False),
    Column("last_seen", String(32), nullable=False),
    Column("revoked", String(32), nullable=True),
)
