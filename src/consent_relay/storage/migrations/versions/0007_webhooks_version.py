"""The version stamp of an organization's webhooks.

- ``organizations.webhooks_version``: bumped in the same transaction as every change to the
  organization's webhooks (created, updated, deleted: ``storage/tx.py``). A process keeps the
  list it read with the version it read it at, and lists the webhooks again only when the
  version it reads in a transaction differs (``services/webhook_cache.py``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("webhooks_version", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("webhooks_version")
