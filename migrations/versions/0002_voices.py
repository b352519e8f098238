"""Saved voices, stored cloning results, and inline voices on jobs.

Revision ID: 0002_voices
Revises: 0001_jobs
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_voices"
down_revision: str | None = "0001_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "voices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("gpt_cond_latent", sa.LargeBinary(), nullable=False),
        sa.Column("speaker_embedding", sa.LargeBinary(), nullable=False),
        sa.Column("gpt_width", sa.Integer(), nullable=False),
        sa.Column("revision", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "clone_results",
        sa.Column("content_hash", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("gpt_cond_latent", sa.LargeBinary(), nullable=False),
        sa.Column("speaker_embedding", sa.LargeBinary(), nullable=False),
        sa.Column("gpt_width", sa.Integer(), nullable=False),
        sa.Column("reference_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("inline_voice", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("inline_voice")
    op.drop_table("clone_results")
    op.drop_table("voices")
