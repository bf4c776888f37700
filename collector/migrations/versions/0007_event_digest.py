"""Each event's digest, made once at ingest and stored with it, so that the ledger seals it without reading the
event back (collector/ledger.py). Rows stored before have none and are sealed from their columns, as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("digest", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    # The blocks sealed since keep their leaves (kind "E"), which only a collector of this revision or later
    # checks: downgrade only to go back to a copy of the database from before it.
    op.drop_column("events", "digest")
