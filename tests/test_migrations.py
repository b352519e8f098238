"""Alembic: upgrade head, downgrade base, upgrade head again, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from shared.db import make_engine
from shared.models import Base
from tools.localfarm import migrate

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def test_upgrade_downgrade_upgrade(database_factory, backend: str) -> None:
    url = database_factory(backend)
    engine = make_engine(url)
    try:
        migrate(url)
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        migrate(url, "base", downgrade=True)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        migrate(url)
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_match_the_models(database_factory, backend: str) -> None:
    """Autogenerate finds nothing to add: the migrations create exactly what the models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = database_factory(backend)
    migrate(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_voices_and_jobs_made_before_tenants_belong_to_the_default_tenant(database_factory, backend: str) -> None:
    from sqlalchemy import text

    url = database_factory(backend)
    migrate(url, "0003_segment_leases")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO voices (id, name, description, gpt_cond_latent, speaker_embedding, gpt_width,"
                    " revision, source, content_hash, created_at, updated_at) VALUES ('narrator', 'N', '', :b, :b,"
                    " 64, 'r1', 'latents', NULL, :now, :now)"
                ),
                {"b": b"\x00", "now": "2026-01-01 00:00:00+00:00"},
            )
            conn.execute(
                text(
                    "INSERT INTO jobs (id, origin, state, text, language, speaker_kind, speaker_ref, params,"
                    " segments_total, segments_dispatched, segments_done, chunks_done, audio_samples, sample_rate,"
                    " redis_epoch, created_at) VALUES ('j1', 'job', 'queued', 't', 'en', 'saved', 'narrator', '{}',"
                    " 1, 0, 0, 0, 0, 24000, 'e', :now)"
                ),
                {"now": "2026-01-01 00:00:00+00:00"},
            )
        migrate(url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT tenant, id, name FROM voices")).all() == [("default", "narrator", "N")]
            assert conn.execute(text("SELECT tenant FROM jobs WHERE id = 'j1'")).scalar_one() == "default"
            # Voice ids are per tenant now: another tenant may have its own "narrator".
            conn.execute(
                text(
                    "INSERT INTO voices (tenant, id, name, description, gpt_cond_latent, speaker_embedding, gpt_width,"
                    " revision, source, created_at, updated_at) VALUES ('acme', 'narrator', 'A', '', :b, :b, 64,"
                    " 'r2', 'latents', :now, :now)"
                ),
                {"b": b"\x00", "now": "2026-01-01 00:00:00+00:00"},
            )
        migrate(url, "0003_segment_leases", downgrade=True)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT id, name FROM voices")).all() == [("narrator", "N")]
    finally:
        engine.dispose()
