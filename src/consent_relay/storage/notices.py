"""Notices between processes: PostgreSQL NOTIFY on commit, LISTEN in every process that cares.

A transaction runs ``notify`` itself, so the notice goes out exactly when its change becomes
visible (and not at all if it rolls back). ``listen`` keeps one asyncpg connection per channel
and reconnects by itself when the database restarts; it tells its caller when it is connected
and when it lost the connection, because a notice sent meanwhile is lost: whoever relies on
notices must fall back (poll, or trust no cache) while not connected. SQLite has no notices:
it serves one process.

Channels: ``DELIVERIES`` wakes the delivery workers; ``API_KEYS`` makes every API process
forget the API keys it knows (one was revoked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from consent_relay.storage.tx import Tx

DELIVERIES = "consent_relay_deliveries"
API_KEYS = "consent_relay_api_keys"
PING_INTERVAL = 1.0  # seconds between checks that the LISTEN connection still works
log = logging.getLogger("consent_relay.notices")


async def notify(tx: Tx, channel: str) -> None:
    """On PostgreSQL, notify every listener of ``channel`` when this transaction commits."""
    if tx.dialect == "postgresql":
        await tx.conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})


def _nothing() -> None:
    pass


async def listen(
    database_url: str,
    channel: str,
    stop: asyncio.Event,
    *,
    on_notice: Callable[[], None],
    on_connected: Callable[[], None] = _nothing,
    on_lost: Callable[[], None] = _nothing,
) -> None:
    """Call ``on_notice`` for every notice on ``channel`` until ``stop``; ``on_connected``
    each time the LISTEN starts (notices sent before it are lost), ``on_lost`` each time the
    connection fails. Reconnects with backoff."""
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
                server_settings={"application_name": f"consent-relay listen {channel}"},
            )
            await conn.add_listener(channel, lambda *_args: on_notice())
            delay = 0.2
            log.info("listening for notices on %s", channel)
            on_connected()
            while not stop.is_set() and not conn.is_closed():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), PING_INTERVAL)
                if not stop.is_set() and not conn.is_closed():
                    # Notice a dead connection promptly (nothing else is sent on it).
                    await conn.execute("SELECT 1", timeout=5)
            if not stop.is_set():
                on_lost()
        except Exception as exc:
            # Never die quietly: a dead listener's caller would go on trusting notices.
            on_lost()
            expected = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
            if isinstance(exc, expected):
                log.warning(
                    "LISTEN %s connection lost (%s); reconnecting", channel, type(exc).__name__
                )
            else:
                log.exception("LISTEN %s failed; reconnecting", channel)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close(timeout=2)
