"""dashboard_logouts: dashboard sessions ended by signing out, so that a copy of the session
cookie is refused after the sign-out, in every process, until the cookie would have expired

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_logouts",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("session_id"),
    )
    with op.batch_alter_table("dashboard_logouts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dashboard_logouts_expires_ms"), ["expires_ms"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("dashboard_logouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dashboard_logouts_expires_ms"))
    op.drop_table("dashboard_logouts")
