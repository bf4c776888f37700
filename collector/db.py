"""The collector's tables (SQLAlchemy Core) and how to open the database durably.

The schema is owned by Alembic (collector/migrations); these table objects are what the code reads and writes,
and the migrations must build exactly them (a test compares the two).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

# An auto-incrementing 64-bit key on PostgreSQL, SQLite's rowid on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps them as naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; every time in custos carries its zone")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


credentials = Table(
    "credentials",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    # agent: may only send events; source: may only send business events; api: reads with a role.
    Column("kind", String(16), nullable=False),
    Column("role", String(16), nullable=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("last_seen_at", UtcDateTime(), nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),  # ingest order, for the rules and the ledger
    Column("event_id", String(36), nullable=False, unique=True),
    Column("kind", String(64), nullable=False),
    Column("ts", UtcDateTime(), nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("agent", String(128), nullable=False),  # the credential's name, never the payload's claim
    Column("host", String(256), nullable=False),
    Column("source_type", String(64), nullable=False),
    Column("os_user", String(256), nullable=True),
    Column("db_user", String(256), nullable=True),
    Column("staff_id", String(256), nullable=True),
    Column("body", Text, nullable=False),  # the event as received (JSON), agent_id set from the credential
    Index("ix_events_kind_ts", "kind", "ts"),
    Index("ix_events_ts", "ts"),
    Index("ix_events_agent_ts", "agent", "ts"),
    Index("ix_events_staff_id_ts", "staff_id", "ts"),
)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine whose commits are durable before they return: SQLite WAL with synchronous=FULL, PostgreSQL
    with synchronous_commit=on (whatever the server's default)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    kwargs.setdefault("pool_size", 8)
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, connect_args={"options": "-c synchronous_commit=on"}, **kwargs)
