"""Flow control: receivers in trouble (rate limits, Retry-After, 410 Gone) and consent-safe
replays.

- ``webhooks.rate_limit`` (requests per second, null = none), ``webhooks.auto_replay``
  (replay dead letters once the receiver is back, default true) and
  ``webhooks.disabled_reason`` (why we disabled it ourselves, e.g. on a 410 Gone).
- ``webhook_flow``: the per-webhook state the claim reads and writes (a token bucket, a
  pause asked for by ``Retry-After``), apart from the webhook row so that claims do not
  churn it.
- ``deliveries.subject``: what a message is about, set when it is queued ("user" for
  ``user.*``, "event:<id>" for ``event.*``), so that a delivered message finds the dead
  letters it supersedes through ``ix_deliveries_queue``; ``deliveries.held_attempts``
  counts the attempts a receiver asked us to hold (Retry-After, 410), which use up no retry.
  Deliveries gain the status ``superseded`` (the column is text already).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rate_limit", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("auto_replay", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column("disabled_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("held_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "webhook_flow",
        sa.Column("webhook_id", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_ms", sa.BigInteger(), nullable=False),
        sa.Column("paused_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("webhook_id"),
    )
    op.create_index("ix_webhook_flow_paused", "webhook_flow", ["paused_until_ms"])
    op.create_index(
        "ix_deliveries_webhook_due",
        "deliveries",
        ["webhook_id", "due_ms"],
        postgresql_where=sa.text("due_ms IS NOT NULL"),
        sqlite_where=sa.text("due_ms IS NOT NULL"),
    )
    op.create_index(
        "ix_webhooks_rate_limited",
        "webhooks",
        ["id"],
        postgresql_where=sa.text("rate_limit IS NOT NULL"),
        sqlite_where=sa.text("rate_limit IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhooks_rate_limited", table_name="webhooks")
    op.drop_index("ix_deliveries_webhook_due", table_name="deliveries")
    op.drop_index("ix_webhook_flow_paused", table_name="webhook_flow")
    op.drop_table("webhook_flow")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("held_attempts")
        batch_op.drop_column("subject")
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("disabled_reason")
        batch_op.drop_column("auto_replay")
        batch_op.drop_column("rate_limit")
