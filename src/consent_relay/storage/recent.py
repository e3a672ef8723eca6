"""Newest-first pages of consent events and users, for the dashboard (API clients page
oldest-first through ``Tx.list_events`` and ``Tx.list_users``).

Each page asks for one row more than it shows: the caller learns from it whether an older
page exists, without a count.
"""

from __future__ import annotations

from sqlalchemy import select

from consent_relay.storage import mapping
from consent_relay.storage.records import EventRecord, UserRecord
from consent_relay.storage.tables import events, users
from consent_relay.storage.tx import Tx


async def newest_events(
    tx: Tx, org_id: str, *, user_id: str | None, before: int | None, limit: int
) -> list[EventRecord]:
    """The organization's events (of ``user_id`` only, if given) with ``pk`` below
    ``before``, newest first."""
    stmt = select(events).where(events.c.organization_id == org_id)
    if user_id is not None:
        stmt = stmt.where(events.c.user_id == user_id)
    if before is not None:
        stmt = stmt.where(events.c.pk < before)
    rows = await tx.conn.execute(stmt.order_by(events.c.pk.desc()).limit(limit))
    return [mapping.event(row) for row in rows]


async def newest_users(tx: Tx, org_id: str, *, before: int | None, limit: int) -> list[UserRecord]:
    """The organization's users with ``pk`` below ``before``, most recently created first."""
    stmt = select(users).where(users.c.organization_id == org_id)
    if before is not None:
        stmt = stmt.where(users.c.pk < before)
    rows = await tx.conn.execute(stmt.order_by(users.c.pk.desc()).limit(limit))
    return [mapping.user(row) for row in rows]
