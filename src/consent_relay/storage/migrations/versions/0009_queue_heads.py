"""A queue's clock and lease move from its head delivery to the queue's own row.

The delivery worker's claim and record wrote the wide delivery row three times a delivery
(claimed, recorded, the next one made due), each write a non-HOT update under every index of
``deliveries`` because ``due_ms`` and ``status`` are indexed: on PostgreSQL most of the
database's CPU a delivery was B-tree insertion (issue 12). Now ``delivery_queues`` (one narrow
row per (webhook, user), already written by every append and record) carries ``due_ms`` and
``lease_owner`` for its head, the delivery of seq ``last_seq - pending + 1``: a claim writes
the queue row only, and a record writes the delivery once and the queue row once.

- ``delivery_queues.due_ms`` and ``lease_owner``, filled from each queue's due head, and the
  due indexes with them (``ix_delivery_queues_due``, ``ix_delivery_queues_webhook_due``);
- ``deliveries.due_ms``, ``lease_owner`` and the unused ``lease_expires_ms`` dropped, with
  ``ix_deliveries_due`` and ``ix_deliveries_webhook_due``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_DUE = sa.text("due_ms IS NOT NULL")


def upgrade() -> None:
    op.add_column("delivery_queues", sa.Column("due_ms", sa.BigInteger(), nullable=True))
    op.add_column("delivery_queues", sa.Column("lease_owner", sa.Text(), nullable=True))
    op.execute(
        """
        UPDATE delivery_queues SET
            due_ms = (SELECT d.due_ms FROM deliveries d
                      WHERE d.webhook_id = delivery_queues.webhook_id
                        AND d.user_id = delivery_queues.user_id
                        AND d.seq = delivery_queues.last_seq - delivery_queues.pending + 1
                        AND d.status = 'pending'),
            lease_owner = (SELECT d.lease_owner FROM deliveries d
                           WHERE d.webhook_id = delivery_queues.webhook_id
                             AND d.user_id = delivery_queues.user_id
                             AND d.seq = delivery_queues.last_seq - delivery_queues.pending + 1
                             AND d.status = 'pending')
        WHERE pending > 0
        """
    )
    op.create_index(
        "ix_delivery_queues_due",
        "delivery_queues",
        ["due_ms"],
        postgresql_where=_DUE,
        sqlite_where=_DUE,
    )
    op.create_index(
        "ix_delivery_queues_webhook_due",
        "delivery_queues",
        ["webhook_id", "due_ms"],
        postgresql_where=_DUE,
        sqlite_where=_DUE,
    )
    op.drop_index("ix_deliveries_webhook_due", table_name="deliveries")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
    for column in ("due_ms", "lease_owner", "lease_expires_ms"):
        op.drop_column("deliveries", column)


def downgrade() -> None:
    op.add_column("deliveries", sa.Column("lease_expires_ms", sa.BigInteger(), nullable=True))
    op.add_column("deliveries", sa.Column("lease_owner", sa.Text(), nullable=True))
    op.add_column("deliveries", sa.Column("due_ms", sa.BigInteger(), nullable=True))
    op.execute(
        """
        UPDATE deliveries SET
            due_ms = (SELECT q.due_ms FROM delivery_queues q
                      WHERE q.webhook_id = deliveries.webhook_id
                        AND q.user_id = deliveries.user_id
                        AND q.last_seq - q.pending + 1 = deliveries.seq),
            lease_owner = (SELECT q.lease_owner FROM delivery_queues q
                           WHERE q.webhook_id = deliveries.webhook_id
                             AND q.user_id = deliveries.user_id
                             AND q.last_seq - q.pending + 1 = deliveries.seq)
        WHERE status = 'pending'
        """
    )
    op.create_index("ix_deliveries_due", "deliveries", ["due_ms"], postgresql_where=_DUE,
                    sqlite_where=_DUE)  # fmt: skip
    op.create_index(
        "ix_deliveries_webhook_due",
        "deliveries",
        ["webhook_id", "due_ms"],
        postgresql_where=_DUE,
        sqlite_where=_DUE,
    )
    op.drop_index("ix_delivery_queues_webhook_due", table_name="delivery_queues")
    op.drop_index("ix_delivery_queues_due", table_name="delivery_queues")
    op.drop_column("delivery_queues", "lease_owner")
    op.drop_column("delivery_queues", "due_ms")
