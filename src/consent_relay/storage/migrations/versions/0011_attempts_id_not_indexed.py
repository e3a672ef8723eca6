"""An attempt's ``id`` is no longer indexed.

Nothing looks an attempt up by its id: a delivery's attempts are read through
``uq_attempts_number`` (delivery, attempt number), the recent ones through the primary key.
The unique index on ``id`` was one more B-tree insertion for every attempt the worker records
(issue 12). Ids stay unique as they are made (``ids``: time and random bits).

PostgreSQL drops the constraint; SQLite, which cannot drop an unnamed constraint, copies the
table (Alembic's batch mode, from the table as it stands after this revision).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _attempts(id_unique: bool) -> sa.Table:
    """``attempts`` as this revision (``id_unique`` false) or the one before leaves it."""
    return sa.Table(
        "attempts",
        sa.MetaData(),
        sa.Column("pk", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text(), nullable=False, unique=id_unique),
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("response_body", sa.Text()),
        sa.Column("request_headers", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("response_bytes", sa.Integer()),
        sa.UniqueConstraint("delivery_id", "attempt_number", name="uq_attempts_number"),
    )


def _sqlite_copy(id_unique: bool) -> None:
    with op.batch_alter_table("attempts", copy_from=_attempts(id_unique), recreate="always"):
        pass  # the copy is the change: the table as ``_attempts`` describes it


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("attempts_id_key", "attempts", type_="unique")
    else:
        _sqlite_copy(id_unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_unique_constraint("attempts_id_key", "attempts", ["id"])
    else:
        _sqlite_copy(id_unique=True)
