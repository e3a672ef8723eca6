"""The storage interface: one ``Store`` over SQLite or PostgreSQL (SQLAlchemy Core).

Everything the service does happens inside ``store.write()`` (one transaction, committed on
success) or ``store.read()``. The transaction object ``Tx`` has one method per query; the
dialect differences live in ``engine.py`` and in ``_insert`` below. The same contract tests
run against both databases (tests/integration).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from consent_relay import errors
from consent_relay.storage import engine as engines
from consent_relay.storage import migrate
from consent_relay.storage.tx import Tx

log = logging.getLogger("consent_relay.storage")


class Store:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = engines.is_sqlite_url(url)
        self.engine: AsyncEngine = engines.create_engine(url, pool_size=pool_size)
        self._sqlite_lock = asyncio.Lock() if self.is_sqlite else None

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        async with engines.write_connection(self.engine, self._sqlite_lock) as conn:
            yield Tx(conn)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Tx]:
        async with engines.read_connection(self.engine) as conn:
            yield Tx(conn)

    async def migrate(self) -> None:
        await migrate.upgrade(self.engine)

    async def migrate_when_ready(
        self, stop: asyncio.Event | None = None, *, give_up_after: float | None = None
    ) -> bool:
        """Migrate, waiting (with backoff) while the database is unavailable: a process may
        start before its database. False when stopped or out of patience first."""
        loop = asyncio.get_running_loop()
        deadline = None if give_up_after is None else loop.time() + give_up_after
        delay = 0.2
        while True:
            try:
                await self.migrate()
                return True
            except errors.StorageUnavailable:
                if deadline is not None and loop.time() + delay > deadline:
                    raise
                log.warning("database unavailable at start-up; retrying in %.1f s", delay)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return False
            delay = min(delay * 2, 5.0)

    async def ping(self) -> bool:
        try:
            async with self.read() as tx:
                await tx.ping()
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()
