"""Loan-fraud linkage: which customers each stored read touched, and which business events name each customer.

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from collector.db import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customer_reads",
        sa.Column("customer_key", sa.String(64), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_key", "event_seq", name="pk_customer_reads"),
    )
    op.create_index("ix_customer_reads_ts", "customer_reads", ["ts"])
    op.create_table(
        "customer_hits",
        sa.Column("customer_key", sa.String(64), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("ref", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("customer_key", "event_seq", name="pk_customer_hits"),
    )
    op.create_index("ix_customer_hits_kind_ts", "customer_hits", ["kind", "ts"])
    op.create_index("ix_customer_hits_ref", "customer_hits", ["ref"])


def downgrade() -> None:
    op.drop_table("customer_hits")
    op.drop_table("customer_reads")
