"""The storage interface: one ``Store`` over SQLite or PostgreSQL (SQLAlchemy Core).

Everything the service does happens inside ``store.write()`` (one transaction, committed on
success) or ``store.read()``. The transaction object ``Tx`` has one method per query; the
dialect differences live in ``engine.py`` and in ``_insert`` below. The same contract tests
run against both databases (tests/integration).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from consent_relay.storage import engine as engines
from consent_relay.storage import migrate
from consent_relay.storage.tx import Tx


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

    async def ping(self) -> bool:
        try:
            async with self.read() as tx:
                await tx.ping()
        except Exception:
            return False
        return True

    async def close(self) -> None:
        await self.engine.dispose()
