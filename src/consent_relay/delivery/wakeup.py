"""Wake workers in other processes: PostgreSQL NOTIFY on commit, LISTEN here.

The enqueueing transaction runs ``pg_notify`` itself, so the notice goes out exactly when
the deliveries become visible. The listener (``storage.notices.listen``) keeps one asyncpg
connection and reconnects by itself when the database restarts; polling covers any notice
missed meanwhile, and every (re)connection wakes the workers once for what was queued.
"""

from __future__ import annotations

import asyncio

from consent_relay.storage import notices

CHANNEL = notices.DELIVERIES


async def listen(database_url: str, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Set ``wake`` on every notice until ``stop``; reconnect with backoff on failures."""
    await notices.listen(database_url, CHANNEL, stop, on_notice=wake.set, on_connected=wake.set)
