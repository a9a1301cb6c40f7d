"""live-session cut status per target (scimgate status)

Revision ID: 0006
Revises: 0005 (the chain is 0001, 0002 agents, 0003 console, 0004 fleet, 0005 cut-offs,
0006 session cut status)
Create Date: 2026-12-03 16:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (
    ("sessions_cut", sa.BigInteger()),
    ("sessions_cut_since", sa.String(length=32)),
    ("last_session_cut", sa.String(length=32)),
    ("last_session_sweep", sa.String(length=32)),
    ("last_session_sweep_result", sa.Text()),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("sync_targets", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_targets") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
