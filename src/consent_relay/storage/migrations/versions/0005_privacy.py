"""Privacy: the accountability ledger (a hash chain per organization of every delivered
message), erasures of deleted users, and purgeable message payloads (retention and erasure).

- ``ledger_entries``: one row per delivered message and webhook, chained per organization;
  no personal data beyond the user's id. ``ledger_heads`` holds each organization's last
  sequence number and hash, locked by the transaction that records a delivered batch so that
  concurrent workers chain their entries one after the other.
- ``erasures``: the users whose personal data was erased, and when; ``settled_at`` is set once
  nothing of theirs waits to be purged (pending deliveries done, dead letters' grace over).
- ``messages.parameters`` becomes nullable: a purged message keeps its ids, type and times,
  ``purged_at`` and ``purge_reason`` ("erased" | "expired"). The partial indexes on unpurged
  messages let the purge find its work without reading purged rows again, and an erasure
  find a user's messages.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("webhook_id", sa.Text(), nullable=False),
        sa.Column("delivered_at", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("payload_sha256", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.Text(), nullable=False),
        sa.Column("entry_hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "seq"),
    )
    op.create_index(
        "ix_ledger_entries_user", "ledger_entries", ["organization_id", "user_id", "seq"]
    )
    op.create_index(
        "ix_ledger_entries_webhook", "ledger_entries", ["organization_id", "webhook_id", "seq"]
    )
    op.create_table(
        "ledger_heads",
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id"),
    )
    op.create_table(
        "erasures",
        sa.Column("organization_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("erased_at", sa.Text(), nullable=False),
        sa.Column("settled_at", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("organization_id", "user_id"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.alter_column("parameters", existing_type=sa.Text(), nullable=True)
        batch_op.add_column(sa.Column("purged_at", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("purge_reason", sa.Text(), nullable=True))
    op.create_index(
        "ix_messages_unpurged",
        "messages",
        ["pk"],
        postgresql_where=sa.text("purged_at IS NULL"),
        sqlite_where=sa.text("purged_at IS NULL"),
    )
    op.create_index(
        "ix_messages_user_unpurged",
        "messages",
        ["organization_id", "user_id"],
        postgresql_where=sa.text("purged_at IS NULL"),
        sqlite_where=sa.text("purged_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_user_unpurged", table_name="messages")
    op.drop_index("ix_messages_unpurged", table_name="messages")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("purge_reason")
        batch_op.drop_column("purged_at")
        batch_op.alter_column("parameters", existing_type=sa.Text(), nullable=False)
    op.drop_table("erasures")
    op.drop_table("ledger_heads")
    op.drop_index("ix_ledger_entries_webhook", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_user", table_name="ledger_entries")
    op.drop_table("ledger_entries")
