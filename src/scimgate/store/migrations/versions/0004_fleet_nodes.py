"""fleet nodes: one row per `scimgate agent` (its HAProxy node)

Revision ID: 0004
Revises: 0003 (the admin console's; the chain is 0001, 0002 agents, 0003 console, 0004 fleet)
Create Date: 2026-12-03 13:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fleet_nodes",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("worker_pid", sa.Integer(), nullable=True),
        sa.Column("haproxy_version", sa.String(length=64), nullable=True),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        sa.Column("fail_closed", sa.Boolean(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("started", sa.String(length=32), nullable=False),
        sa.Column("heartbeat", sa.String(length=32), nullable=False),
        sa.Column("heartbeat_epoch", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("fleet_nodes")
