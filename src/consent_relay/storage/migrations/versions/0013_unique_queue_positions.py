"""A delivery's place in its queue is unique: ``ix_deliveries_queue`` becomes a unique index.

It always was unique in fact (``queue.append`` numbers a queue's deliveries one after the
other under the queue row's lock). Declared, it tells PostgreSQL's planner that a lookup by
webhook, user and sequence number finds one row: the worker's claim, a prepared statement,
kept a generic plan made while the tables were nearly empty, where the non-unique index and
``ix_deliveries_webhook_status`` cost the same, and found each head by walking the
webhook's whole history (the latency benchmark's claims grew from 2 to 70 ms in a run).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_COLUMNS = ["webhook_id", "user_id", "seq"]


def upgrade() -> None:
    op.drop_index("ix_deliveries_queue", table_name="deliveries")
    op.create_index("ix_deliveries_queue", "deliveries", _COLUMNS, unique=True)


def downgrade() -> None:
    op.drop_index("ix_deliveries_queue", table_name="deliveries")
    op.create_index("ix_deliveries_queue", "deliveries", _COLUMNS)
