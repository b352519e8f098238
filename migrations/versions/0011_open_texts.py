"""A job whose text is still being written (a voice agent's WebSocket context): more segments may come.

Revision ID: 0011_open_texts
Revises: 0010_voice_aliases
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_open_texts"
down_revision: str | None = "0010_voice_aliases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("text_open", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("jobs", "text_open")
