"""attempts.response_bytes as a 64-bit integer on PostgreSQL.

When a body is cut (more than the 4 KiB kept), its size is what the receiver declared
(``Content-Length``), which the receiver chooses: 2 GiB or more did not fit PostgreSQL's
``integer``, and the attempt was then recorded without its row (the batch's isolation saved
the rest). SQLite's ``INTEGER`` is 64-bit already: nothing changes there. On PostgreSQL the
change rewrites the ``attempts`` table, holding its lock while it does.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_INT_MAX = 2**31 - 1


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "attempts", "response_bytes", type_=sa.BigInteger(), existing_type=sa.Integer()
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # A size that no longer fits becomes unknown (NULL: "more than was kept").
        op.execute(f"UPDATE attempts SET response_bytes = NULL WHERE response_bytes > {_INT_MAX}")
        op.alter_column(
            "attempts", "response_bytes", type_=sa.Integer(), existing_type=sa.BigInteger()
        )
