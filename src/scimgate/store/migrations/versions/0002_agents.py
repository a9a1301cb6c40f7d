"""agents, agentic applications and their links

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 13:50:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _doc() -> sa.types.TypeEngine:  # type: ignore[type-arg]
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # "AgenticApplication" (18 characters) is an audited resource type. SQLite does not
    # enforce VARCHAR lengths (and would copy the whole audit table to alter it).
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "audit_events",
            "resource_type",
            type_=sa.String(length=32),
            existing_type=sa.String(length=16),
            existing_nullable=True,
        )
    op.create_table(
        "scim_agents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_lower", sa.Text(), nullable=False),
        sa.Column("agent_user_name", sa.Text(), nullable=True),
        sa.Column("agent_user_name_lower", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("attrs", _doc(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created", sa.String(length=32), nullable=False),
        sa.Column("last_modified", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_user_name_lower"),
    )
    with op.batch_alter_table("scim_agents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scim_agents_name_lower"), ["name_lower"])
        batch_op.create_index(batch_op.f("ix_scim_agents_subject"), ["subject"])
        batch_op.create_index(batch_op.f("ix_scim_agents_external_id"), ["external_id"])
    op.create_table(
        "scim_agentic_applications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_lower", sa.Text(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("attrs", _doc(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created", sa.String(length=32), nullable=False),
        sa.Column("last_modified", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("scim_agentic_applications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scim_agentic_applications_name_lower"), ["name_lower"])
        batch_op.create_index(
            batch_op.f("ix_scim_agentic_applications_external_id"), ["external_id"]
        )
    op.create_table(
        "scim_agent_links",
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("other_id", sa.String(length=36), nullable=False),
        sa.Column("relation", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", "other_id", "relation"),
    )
    with op.batch_alter_table("scim_agent_links", schema=None) as batch_op:
        batch_op.create_index("ix_scim_agent_links_other", ["other_id", "relation"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "audit_events",
            "resource_type",
            type_=sa.String(length=16),
            existing_type=sa.String(length=32),
            existing_nullable=True,
        )
    op.drop_table("scim_agent_links")
    op.drop_table("scim_agentic_applications")
    op.drop_table("scim_agents")
