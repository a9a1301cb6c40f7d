"""identity cut-offs (token cut-off at deprovisioning)

Revision ID: 0005
Revises: 0004 (the chain is 0001, 0002 agents, 0003 console, 0004 fleet, 0005 cut-offs)
Create Date: 2026-12-03 13:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_cutoffs",
        sa.Column("identity_key", sa.String(length=64), nullable=False),
        sa.Column("not_before", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("identity_key"),
    )


def downgrade() -> None:
    op.drop_table("identity_cutoffs")
