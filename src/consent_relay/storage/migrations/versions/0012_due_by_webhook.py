"""Due queues are found a webhook at a time: ``ix_delivery_queues_due`` is dropped.

The main claim used to walk that index (every due head, oldest first) and skip the heads of
webhooks it does not serve: a disabled webhook's backlog, a paused one's, a rate-limited
one's, all of them due, walked past by every claim. It now reads each served webhook's due
heads through ``ix_delivery_queues_webhook_due`` (``storage/due.py``), and so does the
worker's question of when the next one falls due. The dropped index was one more B-tree
insertion each time a queue's clock moves (a claim, a record: twice a delivery).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_DUE = sa.text("due_ms IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_delivery_queues_due", table_name="delivery_queues")


def downgrade() -> None:
    op.create_index(
        "ix_delivery_queues_due",
        "delivery_queues",
        ["due_ms"],
        postgresql_where=_DUE,
        sqlite_where=_DUE,
    )
