"""Migration 0004 builds exactly the web UI's tables of collector/db.py, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from collector.db import make_engine, metadata
from collector.migrate import upgrade

UI_TABLES = {"users", "web_sessions", "alert_triage", "alert_history", "audit_log", "notify_outbox", "notify_log",
             "weekly_summaries", "attestations", "job_runs", "ui_cursors"}


def test_migration_0004_builds_the_ui_tables_as_declared(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
        touched = {t for t in UI_TABLES if t in repr(diff)}
        assert not touched, diff
        assert UI_TABLES <= set(metadata.tables)
    finally:
        engine.dispose()
