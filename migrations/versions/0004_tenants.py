"""Tenants and API keys: the api_keys table (hashed keys), a tenant on every job and voice, voice ids per tenant.

Everything that exists already belongs to the default tenant. A downgrade keeps only the default tenant's voices
(voice ids were global before: two tenants' "narrator" cannot both survive it).

Revision ID: 0004_tenants
Revises: 0003_segment_leases
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_tenants"
down_revision: str | None = "0003_segment_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_TENANT = "default"  # shared.tenants.DEFAULT_TENANT, frozen here as migrations must be


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=False, server_default=DEFAULT_TENANT))
        batch.create_index("ix_jobs_tenant_state", ["tenant", "state"])
    # The primary key becomes (tenant, id). SQLite cannot change a primary key in place, so the table is rebuilt
    # the same way on both backends: the old one renamed, the new one created, the rows copied.
    _rebuild_voices(with_tenant=True)


VOICE_COLUMNS = (
    "id, name, description, gpt_cond_latent, speaker_embedding, gpt_width, revision, source, content_hash, "
    "created_at, updated_at"
)


def _rebuild_voices(*, with_tenant: bool) -> None:
    op.rename_table("voices", "voices_old")
    tenant = [sa.Column("tenant", sa.String(64), nullable=False, server_default=DEFAULT_TENANT)] if with_tenant else []
    op.create_table(
        "voices",
        *tenant,
        sa.Column("id", sa.String(64), nullable=False),
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
        sa.PrimaryKeyConstraint(*(["tenant"] if with_tenant else []), "id", name="pk_voices" if with_tenant else None),
    )
    if with_tenant:
        op.execute(
            sa.text(f"INSERT INTO voices (tenant, {VOICE_COLUMNS}) SELECT :t, {VOICE_COLUMNS} FROM voices_old")
            .bindparams(t=DEFAULT_TENANT)
        )
    else:
        op.execute(
            sa.text(f"INSERT INTO voices ({VOICE_COLUMNS}) SELECT {VOICE_COLUMNS} FROM voices_old WHERE tenant = :t")
            .bindparams(t=DEFAULT_TENANT)
        )
    op.drop_table("voices_old")


def downgrade() -> None:
    _rebuild_voices(with_tenant=False)  # keeps the default tenant's voices only
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_tenant_state")
        batch.drop_column("tenant")
    op.drop_table("api_keys")
