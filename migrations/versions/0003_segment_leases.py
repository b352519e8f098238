"""Segment leases and dispatch bookkeeping: which worker run holds a running segment and until when, and
when a claimed segment was handed to the broker (so a reaper can find work that was lost on the way).

Revision ID: 0003_segment_leases
Revises: 0002_voices
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_segment_leases"
down_revision: str | None = "0002_voices"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_segments") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_job_segments_state_lease", ["state", "lease_expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("job_segments") as batch:
        batch.drop_index("ix_job_segments_state_lease")
        batch.drop_column("sent_at")
        batch.drop_column("due_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
