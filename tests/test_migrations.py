"""bridge.migrate: the Alembic scripts go down to empty and back up to head, on the test database
(SQLite file, or PostgreSQL when BRIDGE_TEST_DATABASE_URL is set)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from bridge import migrate
from bridge.db import Base, make_engine

BRIDGE_TABLES = {"services", "events", "attempts"}


@pytest.fixture
def engine(request: pytest.FixtureRequest, database_url: str) -> Iterator[Engine]:
    """The shared test database without the app: no pooled app connection may hold a lock.

    Whatever the test does, the schema is back at head afterwards; later tests rely on it.
    """
    assert "app" not in request.fixturenames, "the app must not hold connections during this test"
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        migrate.upgrade(eng, "head")
        eng.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_downgrade_to_base_then_upgrade_to_head(engine):
    current, head = migrate.current_and_head(engine)
    assert head is not None
    assert current == head, "the session fixture migrates the test database to head"

    migrate.downgrade(engine, "base")
    assert tables(engine) - {"alembic_version"} == set()
    assert migrate.current_and_head(engine) == (None, head)

    migrate.upgrade(engine, "head")
    assert tables(engine) >= BRIDGE_TABLES
    assert migrate.current_and_head(engine) == (head, head)
    # every table a model declares is created by a migration, not only by create_all
    assert tables(engine) >= set(Base.metadata.tables)
    columns = {c["name"] for c in inspect(engine).get_columns("events")}
    assert {"webhook_id", "body_sha256", "payload", "status", "service_id"} <= columns
    uniques = {u["name"] for u in inspect(engine).get_unique_constraints("events")}
    assert "uq_events_source_webhook_id" in uniques


def test_upgrade_at_head_is_a_no_op(engine):
    before = migrate.current_and_head(engine)
    migrate.upgrade(engine, "head")
    assert migrate.current_and_head(engine) == before
    assert tables(engine) >= BRIDGE_TABLES


def test_the_models_match_the_migrations(engine):
    """Every table, column and index a model declares is what the migrations create."""
    import bridge.models  # noqa: F401 - every table on Base.metadata

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


COUNT_INDEXES = {
    "ix_events_source_status_resolved": ["source", "status", "resolved_at"],
    "ix_events_status_resolved": ["status", "resolved_at"],
}


def event_indexes(engine: Engine) -> dict[str, list[str]]:
    return {i["name"]: i["column_names"] for i in inspect(engine).get_indexes("events")}


def test_a_migration_adds_the_indexes_of_the_consoles_counts(engine):
    assert event_indexes(engine).items() >= COUNT_INDEXES.items()
    scripts = ScriptDirectory.from_config(migrate._config())
    script = next(s for s in scripts.walk_revisions() if s.path.endswith("_event_indexes.py"))
    assert isinstance(script.down_revision, str)
    migrate.downgrade(engine, script.down_revision)
    assert not set(COUNT_INDEXES) & set(event_indexes(engine))
    migrate.upgrade(engine, "head")
    assert event_indexes(engine).items() >= COUNT_INDEXES.items()
