"""Classes of work: each job is live (a listener waits) or bulk; earlier jobs were all served as live.

Revision ID: 0006_priority
Revises: 0005_idempotency
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_priority"
down_revision: str | None = "0005_idempotency"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.String(8), nullable=False, server_default="live"))
        batch.add_column(sa.Column("priority_stated", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("priority_stated")
        batch.drop_column("priority")
