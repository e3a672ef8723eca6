"""PostgreSQL's ``ledger_chain``: the ledger's hash chain computed where the entries are
written, so that a worker's record (its queues, deliveries, attempts and ledger entries) is
one statement, one round trip (``storage.ledger.pg_ctes``).

``ledger_chain(prev_hash, entries)`` returns the hash of each entry in turn, each the
SHA-256 (hex) of the previous hash, a newline and the entry's canonical text
(``domain.ledger.hash_values``: the worker sends that text, all but the sequence number the
statement assigns). SQLite has no functions of this kind and needs none: its record is one
hop to its thread already (``storage.queue_sqlite``), where Python chains the entries.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# STRICT: a NULL argument gives NULL (never a chain from nothing). The array is appended to
# in place (PL/pgSQL keeps it expanded), an entry's hash costs the same at any position.
_CREATE = r"""
CREATE OR REPLACE FUNCTION ledger_chain(prev_hash text, entries text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    hashes text[] := '{}';
    entry text;
BEGIN
    FOREACH entry IN ARRAY entries LOOP
        prev_hash := encode(sha256(convert_to(prev_hash || E'\n' || entry, 'UTF8')), 'hex');
        hashes := array_append(hashes, prev_hash);
    END LOOP;
    RETURN hashes;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS ledger_chain(text, text[])")
