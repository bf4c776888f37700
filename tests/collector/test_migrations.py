"""The Alembic migrations build exactly the tables that collector/db.py describes, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, Index, MetaData, String

from collector.db import make_engine, metadata
from collector.migrate import _config, current, head, upgrade


def _differences(engine: Engine, target: MetaData) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(context, target))


def test_the_migrations_build_exactly_the_tables_of_collector_db(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert current(engine) == head()
        assert _differences(engine, metadata) == []
    finally:
        engine.dispose()


def test_the_comparison_sees_a_table_that_differs(db_url: str) -> None:
    """The check above could fail: one more column and one more index in the tables are reported."""
    engine = make_engine(db_url)
    changed = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    events = changed.tables["events"]
    events.append_column(Column("branch", String(32), nullable=True))
    Index("ix_events_branch", events.c.branch)
    try:
        upgrade(engine)
        found = {(d[0], getattr(d[-1], "name", None)) for d in _differences(engine, changed) if isinstance(d, tuple)}
        assert ("add_column", "branch") in found
        assert ("add_index", "ix_events_branch") in found
    finally:
        engine.dispose()


def test_downgrading_to_nothing_and_upgrading_again_gives_the_same_tables(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        cfg = _config(engine)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert current(engine) is None
        upgrade(engine)
        assert _differences(engine, metadata) == []
    finally:
        engine.dispose()
