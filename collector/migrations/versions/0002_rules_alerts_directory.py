"""Rule engine: alerts, rule state and cursors, staff directory and work assignments.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from collector.db import BigId, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("title", sa.String(256), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("group_key", sa.String(512), nullable=False),
        sa.Column("staff_id", sa.String(256), nullable=True),
        sa.Column("person_name", sa.String(256), nullable=True),
        sa.Column("team", sa.String(128), nullable=True),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("first_ts", UtcDateTime(), nullable=False),
        sa.Column("last_ts", UtcDateTime(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("measures", sa.Text(), nullable=False),
        sa.Column("trigger_event_id", sa.String(36), nullable=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, server_default="new"),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("alert_id", name="uq_alerts_alert_id"),
    )
    op.create_index("ix_alerts_rule_id_group_key_ts", "alerts", ["rule_id", "group_key", "ts"])
    op.create_index("ix_alerts_staff_id_ts", "alerts", ["staff_id", "ts"])
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])
    op.create_table(
        "rule_state",
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("part", sa.String(16), nullable=False),
        sa.Column("group_key", sa.String(512), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "part", "group_key", name="pk_rule_state"),
    )
    op.create_table(
        "rule_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("holes", sa.Text(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_rule_cursors"),
    )
    op.create_table(
        "directory_people",
        sa.Column("staff_id", sa.String(256), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("team", sa.String(128), nullable=True),
        sa.Column("manager", sa.String(256), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("shift", sa.String(256), nullable=True),
        sa.Column("email", sa.String(256), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("staff_id", name="pk_directory_people"),
    )
    op.create_table(
        "directory_accounts",
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("staff_id", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", "staff_id", name="pk_directory_accounts"),
    )
    op.create_index("ix_directory_accounts_staff_id", "directory_accounts", ["staff_id"])
    op.create_table(
        "work_assignments",
        sa.Column("staff_id", sa.String(256), nullable=False),
        sa.Column("customer_key", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("staff_id", "customer_key", name="pk_work_assignments"),
    )


def downgrade() -> None:
    for table in ("work_assignments", "directory_accounts", "directory_people", "rule_cursors", "rule_state",
                  "alerts"):
        op.drop_table(table)
