"""No index names ``deliveries.status``: a delivered record is a HOT update on PostgreSQL.

The record of a delivered attempt changes its delivery's ``status``. While an index named it
(``ix_deliveries_webhook_status``, and the predicate of ``ix_deliveries_dead_letters``),
every such update wrote a new row version with a new entry in each of the table's five
indexes: 12 WAL records a delivery for the worker's record on PostgreSQL. Now:

- ``dead_at``: when the delivery became a dead letter (kept when superseded), NULL for the
  others; filled here from ``updated_at`` for the dead and superseded ones;
- ``ix_deliveries_dead_letters`` (a queue's dead letters, migration 0008) is partial on
  ``dead_at IS NOT NULL``, and ``ix_deliveries_letters`` (webhook, pk), partial on the same,
  lists and counts a webhook's dead letters;
- ``ix_deliveries_webhook`` (webhook, pk) replaces ``ix_deliveries_webhook_status``: a
  webhook's pending deliveries are found through its queues (``delivery_queues``);
- PostgreSQL: the table keeps a fifth of each page free (``fillfactor = 80``), room for the
  new version of a row on its own page, which a HOT update needs.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Text compared byte by byte on PostgreSQL, as every text column (migration 0010).
_TEXT = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
_LETTERS = sa.text("dead_at IS NOT NULL")
_DEAD = sa.text("status = 'dead'")
_QUEUE = ["webhook_id", "user_id", "seq"]


def _partial(name: str, columns: list[str], where: sa.TextClause) -> None:
    """An index of ``deliveries`` on ``columns``, of the rows ``where`` holds for."""
    op.create_index(name, "deliveries", columns, postgresql_where=where, sqlite_where=where)


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("dead_at", _TEXT, nullable=True))
    op.execute("UPDATE deliveries SET dead_at = updated_at WHERE status IN ('dead', 'superseded')")
    op.drop_index("ix_deliveries_webhook_status", table_name="deliveries")
    op.drop_index("ix_deliveries_dead_letters", table_name="deliveries")
    op.create_index("ix_deliveries_webhook", "deliveries", ["webhook_id", "pk"])
    _partial("ix_deliveries_dead_letters", _QUEUE, _LETTERS)
    _partial("ix_deliveries_letters", ["webhook_id", "pk"], _LETTERS)
    # Built again, last: where two indexes cost the same, PostgreSQL's planner keeps the one
    # it considered first, the newest. The worker's claim, a prepared statement, may keep a
    # plan made on near-empty tables: with ``ix_deliveries_webhook`` newer, that plan found
    # each head through it and walked the webhook's history (as with 0013's index before).
    op.drop_index("ix_deliveries_queue", table_name="deliveries")
    op.create_index("ix_deliveries_queue", "deliveries", _QUEUE, unique=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries SET (fillfactor = 80)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE deliveries RESET (fillfactor)")
    op.drop_index("ix_deliveries_letters", table_name="deliveries")
    op.drop_index("ix_deliveries_dead_letters", table_name="deliveries")
    op.drop_index("ix_deliveries_webhook", table_name="deliveries")
    _partial("ix_deliveries_dead_letters", _QUEUE, _DEAD)
    op.create_index("ix_deliveries_webhook_status", "deliveries", ["webhook_id", "status", "pk"])
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("dead_at")
