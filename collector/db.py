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
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    PrimaryKeyConstraint,
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
    # SHA-256 of the row as stored, made at ingest, which the ledger seals (collector/ledger.py `event_digest`);
    # NULL for rows stored before migration 0007, which are sealed from their columns instead
    Column("digest", LargeBinary, nullable=True),
    Index("ix_events_kind_ts", "kind", "ts"),
    Index("ix_events_ts", "ts"),
    Index("ix_events_agent_ts", "agent", "ts"),
    Index("ix_events_staff_id_ts", "staff_id", "ts"),
)


# -- rule engine (migration 0002) -------------------------------------------------------------------------------

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("alert_id", String(32), nullable=False, unique=True),  # derived: the same evaluation, the same id
    Column("rule_id", String(128), nullable=False),
    Column("title", String(256), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("tags", Text, nullable=False),  # JSON list of ATT&CK technique ids
    Column("group_key", String(512), nullable=False),
    Column("staff_id", String(256), nullable=True),
    Column("person_name", String(256), nullable=True),
    Column("team", String(128), nullable=True),
    Column("ts", UtcDateTime(), nullable=False),  # event time the rule was completed
    Column("first_ts", UtcDateTime(), nullable=False),
    Column("last_ts", UtcDateTime(), nullable=False),
    Column("summary", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON list of event ids
    Column("measures", Text, nullable=False),  # JSON object
    Column("trigger_event_id", String(36), nullable=True),
    Column("origin", String(16), nullable=False),  # stream | replay
    Column("status", String(32), nullable=False, server_default="new"),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_alerts_rule_id_group_key_ts", "rule_id", "group_key", "ts"),
    Index("ix_alerts_staff_id_ts", "staff_id", "ts"),
    Index("ix_alerts_created_at", "created_at"),
)

rule_state = Table(
    "rule_state",
    metadata,
    Column("rule_id", String(128), nullable=False),
    Column("part", String(16), nullable=False),  # window | series | seen | steps | presence | mark | trail | links
    Column("group_key", String(512), nullable=False),
    Column("data", Text, nullable=False),  # JSON, as rules/windows.py dumps it
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("rule_id", "part", "group_key", name="pk_rule_state"),
)

rule_cursors = Table(
    "rule_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),  # every event up to here was evaluated, except `holes`
    Column("holes", Text, nullable=False),  # JSON list of seqs not yet seen (commits still in flight)
    Column("updated_at", UtcDateTime(), nullable=False),
)

directory_people = Table(
    "directory_people",
    metadata,
    Column("staff_id", String(256), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("team", String(128), nullable=True),
    Column("manager", String(256), nullable=True),
    Column("end_date", Date, nullable=True),
    Column("kind", String(16), nullable=False),  # person | service | shared
    Column("shift", String(256), nullable=True),
    Column("email", String(256), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)

directory_accounts = Table(
    "directory_accounts",
    metadata,
    Column("kind", String(8), nullable=False),  # db | os
    Column("name", String(256), nullable=False),
    Column("staff_id", String(256), nullable=False),
    PrimaryKeyConstraint("kind", "name", "staff_id", name="pk_directory_accounts"),
    Index("ix_directory_accounts_staff_id", "staff_id"),
)

work_assignments = Table(
    "work_assignments",
    metadata,
    Column("staff_id", String(256), nullable=False),
    Column("customer_key", String(64), nullable=False),  # HMAC of the customer identifier
    Column("source", String(64), nullable=False),  # which import: loan_queue, portfolio, tickets …
    PrimaryKeyConstraint("staff_id", "customer_key", name="pk_work_assignments"),
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


# -- web UI, triage, notifications, weekly summaries (migration 0004) ---------------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # admin | analyst | manager
    Column("team", String(128), nullable=True),  # a manager sees this team only
    Column("email", String(256), nullable=True),
    Column("password_hash", String(256), nullable=False),  # scrypt$n$r$p$salt$hash
    Column("failed_logins", Integer, nullable=False),  # since the last successful log-in
    Column("locked_until", UtcDateTime(), nullable=True),
    Column("disabled_at", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("last_login_at", UtcDateTime(), nullable=True),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 of the cookie; the cookie itself is not kept
    Column("user_id", BigInteger, nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
    Index("ix_web_sessions_user_id", "user_id"),
)

alert_triage = Table(
    "alert_triage",
    metadata,
    Column("alert_id", String(32), primary_key=True),  # the status itself is alerts.status
    Column("assignee", String(128), nullable=True),
    Column("closed_at", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("updated_by", String(128), nullable=False),
)

alert_history = Table(
    "alert_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("alert_id", String(32), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("field", String(32), nullable=False),  # status | assignee | comment
    Column("old", Text, nullable=True),
    Column("new", Text, nullable=True),
    Index("ix_alert_history_alert_id", "alert_id"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("role", String(16), nullable=True),
    Column("action", String(32), nullable=False),  # view | change | attest | login | login_refused | user_add …
    Column("subject", String(32), nullable=False),  # alert | case | person | summary | user | session
    Column("subject_id", String(256), nullable=False),
    Column("staff_id", String(256), nullable=True),  # whose data was looked at or judged
    Column("detail", Text, nullable=True),
    Index("ix_audit_log_staff_id_at", "staff_id", "at"),
    Index("ix_audit_log_at", "at"),
)

notify_outbox = Table(
    "notify_outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(256), nullable=False, unique=True),  # receiver|kind|ref: enqueued once
    Column("receiver", String(128), nullable=False),
    Column("kind", String(32), nullable=False),  # alert | weekly | reminder | escalation
    Column("ref", String(128), nullable=False),
    Column("payload", Text, nullable=False),  # JSON message, rendered per receiver at delivery
    Column("status", String(16), nullable=False),  # pending | sent | dead
    Column("attempts", Integer, nullable=False),
    Column("next_at", UtcDateTime(), nullable=False),
    Column("lease_until", UtcDateTime(), nullable=True),  # a process is delivering it until then
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Index("ix_notify_outbox_status_next_at", "status", "next_at"),
)

notify_log = Table(
    "notify_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("outbox_id", BigInteger, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("receiver", String(128), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("ok", Integer, nullable=False),  # 1 delivered, 0 failed
    Column("detail", Text, nullable=True),
    Index("ix_notify_log_outbox_id", "outbox_id"),
)

weekly_summaries = Table(
    "weekly_summaries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("team", String(128), nullable=False),
    Column("week", String(8), nullable=False),  # ISO week, 2026-W47
    Column("created_at", UtcDateTime(), nullable=False),
    Column("data", Text, nullable=False),  # JSON figures
    Column("html", Text, nullable=False),  # as e-mailed
    Index("ix_weekly_summaries_team_week", "team", "week", unique=True),
)

attestations = Table(
    "attestations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("team", String(128), nullable=False),
    Column("week", String(8), nullable=False),
    Column("staff_id", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("answer", String(16), nullable=True),  # confirm | question
    Column("note", Text, nullable=True),
    Column("answered_by", String(128), nullable=True),
    Column("answered_at", UtcDateTime(), nullable=True),
    Column("reminders", Integer, nullable=False),
    Column("last_reminded_at", UtcDateTime(), nullable=True),
    Column("escalated_at", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_attestations_team_week_staff_id", "team", "week", "staff_id", unique=True),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("job", String(64), nullable=False),
    Column("run_key", String(128), nullable=False),  # weekly:2026-W47 — one run per key across processes
    Column("holder", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # running | done | failed
    Column("started_at", UtcDateTime(), nullable=False),
    Column("lease_until", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    PrimaryKeyConstraint("job", "run_key", name="pk_job_runs"),
)

ui_cursors = Table(
    "ui_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)


# -- tamper evidence (migration 0005) ------------------------------------------------------------------------------

agent_chains = Table(
    "agent_chains",
    metadata,
    Column("agent", String(128), primary_key=True),  # the credential's name
    Column("last_seq", BigInteger, nullable=False),  # the newest chain_seq accepted
    Column("last_hash", String(64), nullable=False),  # SHA-256 of that event's bytes as sent ("" when unknown)
    Column("last_event_id", String(36), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

agent_heartbeats = Table(
    "agent_heartbeats",
    metadata,
    Column("agent", String(128), primary_key=True),
    Column("host", String(256), nullable=False),
    Column("event_id", String(36), nullable=False),  # the newest heartbeat
    Column("received_at", UtcDateTime(), nullable=False),
    Column("monotonic", BigInteger, nullable=False),
    Column("agent_clock", UtcDateTime(), nullable=True),
    Column("uptime_s", Float, nullable=False),
    Column("interval_s", Float, nullable=True),
    Column("dropped", BigInteger, nullable=False),
    Column("config_hash", String(64), nullable=True),
    Column("silent_alerted", UtcDateTime(), nullable=True),  # received_at of the heartbeat a silence alert followed
)

ledger_blocks = Table(
    "ledger_blocks",
    metadata,
    Column("block_no", BigInteger, primary_key=True, autoincrement=False),
    Column("sealed_at", UtcDateTime(), nullable=False),
    Column("event_after", BigInteger, nullable=False),  # events.seq in (event_after, event_to]
    Column("event_to", BigInteger, nullable=False),
    Column("alert_after", BigInteger, nullable=False),  # alerts.id in (alert_after, alert_to]
    Column("alert_to", BigInteger, nullable=False),
    Column("leaves", LargeBinary, nullable=False),  # per record: kind (1 byte), key (8), SHA-256 (32)
    Column("merkle_root", String(64), nullable=False),
    Column("prev_root", String(64), nullable=False),
    Column("root", String(64), nullable=False),  # SHA-256 over the header, merkle_root and prev_root
)

job_cursors = Table(
    "job_cursors",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

proxy_upstreams = Table(
    "proxy_upstreams",
    metadata,
    Column("addr", String(64), nullable=False),  # a database server behind a proxy, as the proxy names it
    Column("port", Integer, nullable=False),
    Column("first_seen", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("addr", "port", name="pk_proxy_upstreams"),
)

# -- loan-fraud linkage (migration 0006) --------------------------------------------------------------------------

customer_reads = Table(
    "customer_reads",
    metadata,
    Column("customer_key", String(64), nullable=False),  # HMAC of the customer identifier
    Column("event_seq", BigInteger, nullable=False),  # the db.query in `events` (who, statement, rows)
    Column("ts", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("customer_key", "event_seq", name="pk_customer_reads"),
    Index("ix_customer_reads_ts", "ts"),
)

customer_hits = Table(
    "customer_hits",
    metadata,
    Column("customer_key", String(64), nullable=False),
    Column("event_seq", BigInteger, nullable=False),  # the business.* event in `events`
    Column("ts", UtcDateTime(), nullable=False),
    Column("kind", String(64), nullable=False),  # business.fraud_confirmed, business.loan_application, …
    Column("ref", String(256), nullable=True),  # case id of a fraud, application id of a loan
    PrimaryKeyConstraint("customer_key", "event_seq", name="pk_customer_hits"),
    Index("ix_customer_hits_kind_ts", "kind", "ts"),
    Index("ix_customer_hits_ref", "ref"),
)
