"""Alembic environment: run by `custos db upgrade` with the engine it opened (see collector/migrate.py)."""

from __future__ import annotations

from alembic import context

from collector.db import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
