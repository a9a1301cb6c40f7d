"""identity cut-offs (token cut-off at deprovisioning)

Revision ID: 0004
Revises: 0003
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
        "identity_cutoffs",
        sa.Column("identity_key", sa.String(length=64), nullable=False),
        sa.Column("not_before", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("identity_key"),
    )


def downgrade() -> None:
    op.drop_table("identity_cutoffs")
