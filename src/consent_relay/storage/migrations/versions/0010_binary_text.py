"""Every text column of PostgreSQL compares byte by byte (``COLLATE "C"``).

A database created in a libc locale (``C.UTF-8``, ``en_US.UTF-8``) compared every text key
with ``strcoll``: each B-tree descent and insertion on an identifier (deliveries, queues,
attempts, ledger entries) paid it, and the delivery worker's record is mostly B-tree
insertion (issue 12). ``"C"`` compares with ``memcmp``, and sorts as SQLite's ``BINARY``
already did, so both databases order identifiers alike whatever the locale. Equality is
unchanged (every libc collation is deterministic). The indexes on the columns are rebuilt,
the tables are not rewritten (same type).

SQLite: nothing to do.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TEXT_COLUMNS = sa.text(
    """
    SELECT table_name, column_name FROM information_schema.columns
    WHERE table_schema = current_schema() AND data_type = 'text'
      AND table_name <> 'alembic_version'
    ORDER BY table_name, ordinal_position
    """
)


def _collate(collation: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    by_table: dict[str, list[str]] = {}
    for table, column in bind.execute(_TEXT_COLUMNS):
        by_table.setdefault(table, []).append(column)
    for table, columns in by_table.items():
        changes = ", ".join(
            f'ALTER COLUMN "{column}" TYPE text COLLATE "{collation}"' for column in columns
        )
        op.execute(f'ALTER TABLE "{table}" {changes}')


def upgrade() -> None:
    _collate("C")


def downgrade() -> None:
    _collate("default")
