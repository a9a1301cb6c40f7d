"""admin console: admin accounts and their sessions, an index for the people counts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 13:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("scim_users", schema=None) as batch_op:
        batch_op.create_index("ix_scim_users_active", ["active"], unique=False)
    op.create_table(
        "admin_accounts",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created", sa.String(length=32), nullable=False),
        sa.Column("rotated", sa.String(length=32), nullable=True),
        sa.Column("revoked", sa.String(length=32), nullable=True),
        sa.Column("last_sign_in", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("admin_id", SEQ, nullable=False),
        sa.Column("created", sa.String(length=32), nullable=False),
        sa.Column("expires", sa.String(length=32), nullable=False),
        sa.Column("last_seen", sa.String(length=32), nullable=False),
        sa.Column("revoked", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("secret_hash"),
    )
    with op.batch_alter_table("admin_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_sessions_admin_id"), ["admin_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("admin_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_sessions_admin_id"))
    op.drop_table("admin_sessions")
    op.drop_table("admin_accounts")
    with op.batch_alter_table("scim_users", schema=None) as batch_op:
        batch_op.drop_index("ix_scim_users_active")
