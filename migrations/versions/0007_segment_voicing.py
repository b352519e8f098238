"""Segments said in their own language, voice or speed, and pauses (SSML, a request's segments).

Revision ID: 0007_segment_voicing
Revises: 0006_priority
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_segment_voicing"
down_revision: str | None = "0006_priority"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job_segments") as batch:
        batch.add_column(sa.Column("language", sa.String(16), nullable=True))
        batch.add_column(sa.Column("voice_kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("voice_ref", sa.String(200), nullable=True))
        batch.add_column(sa.Column("speed", sa.Float(), nullable=True))
        batch.add_column(sa.Column("pause_ms", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("job_segments") as batch:
        for column in ("pause_ms", "speed", "voice_ref", "voice_kind", "language"):
            batch.drop_column(column)
