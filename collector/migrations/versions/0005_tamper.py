"""Tamper evidence: each agent's hash chain and newest heartbeat, the ledger's sealed blocks, job cursors,
the database servers behind proxies.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from collector.db import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_chains",
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("last_event_id", sa.String(36), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("agent", name="pk_agent_chains"),
    )
    op.create_table(
        "agent_heartbeats",
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("host", sa.String(256), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("monotonic", sa.BigInteger(), nullable=False),
        sa.Column("agent_clock", UtcDateTime(), nullable=True),
        sa.Column("uptime_s", sa.Float(), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=True),
        sa.Column("dropped", sa.BigInteger(), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=True),
        sa.Column("silent_alerted", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("agent", name="pk_agent_heartbeats"),
    )
    op.create_table(
        "ledger_blocks",
        sa.Column("block_no", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sealed_at", UtcDateTime(), nullable=False),
        sa.Column("event_after", sa.BigInteger(), nullable=False),
        sa.Column("event_to", sa.BigInteger(), nullable=False),
        sa.Column("alert_after", sa.BigInteger(), nullable=False),
        sa.Column("alert_to", sa.BigInteger(), nullable=False),
        sa.Column("leaves", sa.LargeBinary(), nullable=False),
        sa.Column("merkle_root", sa.String(64), nullable=False),
        sa.Column("prev_root", sa.String(64), nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("block_no", name="pk_ledger_blocks"),
    )
    op.create_table(
        "job_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_job_cursors"),
    )
    op.create_table(
        "proxy_upstreams",
        sa.Column("addr", sa.String(64), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("first_seen", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("addr", "port", name="pk_proxy_upstreams"),
    )


def downgrade() -> None:
    for table in ("proxy_upstreams", "job_cursors", "ledger_blocks", "agent_heartbeats", "agent_chains"):
        op.drop_table(table)
