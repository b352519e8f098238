"""A saved blend keeps its recipe (the voices it mixes, with their weights).

Revision ID: 0009_voice_recipes
Revises: 0008_lexicons
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_voice_recipes"
down_revision: str | None = "0008_lexicons"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("voices") as batch:
        batch.add_column(sa.Column("recipe", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("voices") as batch:
        batch.drop_column("recipe")
