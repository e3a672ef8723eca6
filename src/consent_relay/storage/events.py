"""Consent events, many at a time: the set-based statements of the write path. Single-event
reads and writes are on ``Tx``."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text

from consent_relay.storage import codec, dialect, mapping
from consent_relay.storage.records import EventRecord
from consent_relay.storage.tx import Tx

COLUMNS = (
    ("organization_id", "text"),
    ("id", "text"),
    ("user_id", "text"),
    ("status", "text"),
    ("regulation", "text"),
    ("created_at", "text"),
    ("updated_at", "text"),
    ("confirmed_at", "text"),
    ("seq", "int"),
    ("document", "text"),
)
_NEW_ONLY = "ON CONFLICT DO NOTHING RETURNING organization_id, id"


async def existing_ids(tx: Tx, org_id: str, event_ids: Sequence[str]) -> set[str]:
    """Which of these event ids the organization already has."""
    if not event_ids:
        return set()
    rows = await tx.conn.execute(
        text(EXISTING_SQL[tx.dialect]), {"org": org_id, "ids": codec.dumps(list(event_ids))}
    )
    return {row.id for row in rows}


async def insert_many(tx: Tx, new_events: Sequence[EventRecord]) -> set[tuple[str, str]]:
    """Insert events; returns the (organization, id) of those inserted (an id taken meanwhile
    is left out, not an error)."""
    if not new_events:
        return set()
    result = await tx.conn.execute(text(INSERT_SQL[tx.dialect]), {"rows": rows_json(new_events)})
    return {(row.organization_id, row.id) for row in result}


def rows_json(records: Sequence[EventRecord]) -> str:
    """Events as the JSON array the set-based statements take (one row an object)."""
    return codec.dumps([mapping.event_values(event) for event in records])


# Statement texts per dialect (named parameters, for SQLAlchemy's text() and sqlite3 alike).
DIALECTS = ("postgresql", "sqlite")
EXISTING_SQL = {
    name: f"""
        SELECT id FROM events
        WHERE organization_id = :org AND id IN ({dialect.strings(name, "ids")})
    """
    for name in DIALECTS
}
INSERT_SQL = {name: dialect.insert_rows(name, "events", COLUMNS, _NEW_ONLY) for name in DIALECTS}
