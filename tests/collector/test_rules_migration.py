"""Migration 0002 builds exactly the rule engine's tables of collector/db.py, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from collector.db import make_engine, metadata
from collector.migrate import upgrade

RULE_TABLES = {"alerts", "rule_state", "rule_cursors", "directory_people", "directory_accounts", "work_assignments"}


def _tables_in(diff: object) -> set[str]:
    names: set[str] = set()
    for item in diff if isinstance(diff, list) else [diff]:
        if isinstance(item, list):
            names |= _tables_in(item)
            continue
        for part in item:
            name = getattr(part, "name", None) or getattr(getattr(part, "table", None), "name", None)
            if isinstance(name, str):
                names.add(name)
            elif isinstance(part, str):
                names.add(part)
    return names


def test_migration_0002_builds_the_rule_tables_as_declared(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        assert not (_tables_in(diff) & RULE_TABLES), diff
        assert RULE_TABLES <= set(metadata.tables)
    finally:
        engine.dispose()
