"""Alembic: upgrade head, downgrade base, upgrade head again, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from shared.db import make_engine
from shared.models import Base
from tools.localfarm import migrate


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
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
