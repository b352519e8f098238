"""Books: a bulk job read from a document, its chapters, its sentences said again, and its segments' audio kept.

Revision ID: 0012_books
Revises: 0011_open_texts
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_books"
down_revision: str | None = "0011_open_texts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "books",
        sa.Column("id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False, index=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("author", sa.String(500), nullable=True),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("voice", sa.String(1000), nullable=False),
        sa.Column("chapters", sa.JSON(), nullable=False),
        sa.Column("paragraph_pause_ms", sa.Integer(), nullable=False),
        sa.Column("chapter_pause_ms", sa.Integer(), nullable=False),
        sa.Column("loudness_lufs", sa.Float(), nullable=False),
        sa.Column("normalize", sa.String(8), nullable=False),
        sa.Column("lexicons", sa.JSON(), nullable=True),
        sa.Column("cover_type", sa.String(32), nullable=True),
        sa.Column("cover", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "book_redos",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("book_id", sa.String(32), sa.ForeignKey("books.id", ondelete="CASCADE"), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_book_redos_book_index", "book_redos", ["book_id", "index"])
    op.create_table(
        "kept_audio",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("index", sa.Integer(), primary_key=True),
        sa.Column("pcm", sa.LargeBinary(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("marks", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kept_audio")
    op.drop_table("book_redos")
    op.drop_table("books")
