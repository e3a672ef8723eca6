"""Dashboard sign-outs: the ids of sessions ended before their signed cookie expired.

A deny-list, read on every dashboard request beside the API key check (one primary-key
lookup in the same read transaction) and written only by a sign-out, which also drops the
rows no cookie can use any more, so the table holds the sign-outs of the last hours only.
"""

from __future__ import annotations

from sqlalchemy import delete, select

from consent_relay.storage.tables import dashboard_logouts
from consent_relay.storage.tx import Tx


async def end_session(tx: Tx, session_id: str, *, expires_ms: int, now_ms: int) -> None:
    """Refuse ``session_id`` from now on, until ``expires_ms``; forget expired sign-outs."""
    await tx.conn.execute(delete(dashboard_logouts).where(dashboard_logouts.c.expires_ms < now_ms))
    stmt = tx.upsert(dashboard_logouts).values(session_id=session_id, expires_ms=expires_ms)
    await tx.conn.execute(stmt.on_conflict_do_nothing())


async def session_ended(tx: Tx, session_id: str) -> bool:
    row = await tx.conn.execute(
        select(dashboard_logouts.c.session_id).where(dashboard_logouts.c.session_id == session_id)
    )
    return row.first() is not None
