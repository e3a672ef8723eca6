"""The storage interface: one ``Store`` over SQLite or PostgreSQL (SQLAlchemy Core).

Everything the service does happens inside ``store.write()`` (one transaction, committed on
success) or ``store.read()``. The transaction object ``Tx`` has one method per query; the
dialect differences live in ``engine.py`` and ``dialect.py``. The same contract tests
run against both databases (tests/integration).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from consent_relay import errors
from consent_relay.storage import engine as engines
from consent_relay.storage import migrate, notices
from consent_relay.storage.tx import Tx

log = logging.getLogger("consent_relay.storage")


class Store:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = engines.is_sqlite_url(url)
        self.engine: AsyncEngine = engines.create_engine(url, pool_size=pool_size)
        self._sqlite_lock = asyncio.Lock() if self.is_sqlite else None
        self._closing = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

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

    def watch(
        self,
        channel: str,
        *,
        on_notice: Callable[[], None],
        on_connected: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> bool:
        """On PostgreSQL, listen to ``channel`` in the background until ``close()`` (see
        ``notices.listen`` for the callbacks); call it from the running event loop. False on
        SQLite, which has no notices: it serves one process."""
        if self.is_sqlite:
            return False
        listening = notices.listen(
            self.url,
            channel,
            self._closing,
            on_notice=on_notice,
            on_connected=on_connected,
            on_lost=on_lost,
        )
        self._watchers.append(asyncio.create_task(listening))
        return True

    async def close(self) -> None:
        self._closing.set()
        for watcher in self._watchers:
            watcher.cancel()  # at once, even while connecting to a database that is down
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await self.engine.dispose()
