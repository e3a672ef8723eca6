"""Wake workers in other processes: PostgreSQL NOTIFY on commit, LISTEN here.

The enqueueing transaction runs ``pg_notify`` itself, so the notice goes out exactly when
the deliveries become visible. The listener keeps one asyncpg connection and reconnects by
itself when the database restarts; polling covers any notice missed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

CHANNEL = "consent_relay_deliveries"
log = logging.getLogger("consent_relay.wakeup")


async def listen(database_url: str, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Set ``wake`` on every notice until ``stop``; reconnect with backoff on failures."""
    url = make_url(database_url)
    delay = 0.2
    while not stop.is_set():
        conn: Any = None
        try:
            conn = await asyncpg.connect(
                host=url.host or "127.0.0.1",
                port=url.port or 5432,
                user=url.username,
                password=url.password,
                database=url.database,
                timeout=5,
            )
            await conn.add_listener(CHANNEL, lambda *_args: wake.set())
            delay = 0.2
            wake.set()  # anything queued while we were away
            while not stop.is_set() and not conn.is_closed():
                await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=1.0)
                if not conn.is_closed():
                    await conn.execute("SELECT 1")  # notice a dead connection promptly
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()
