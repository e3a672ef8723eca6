"""The storage interface: one ``Store`` over SQLite or PostgreSQL (SQLAlchemy Core).

Everything the service does happens inside ``store.write()`` (one transaction, committed on
success) or ``store.read()``. The transaction object ``Tx`` has one method per query; the
dialect differences live in ``engine.py`` and ``dialect.py``. The same contract tests
run against both databases (tests/integration). The worker's claim and record, the busiest
transactions, go around SQLAlchemy: on a SQLite file each is a function of ``sqlite3`` calls
run whole on the event loop's thread (``sqlite_transaction``), on PostgreSQL a function of
``asyncpg`` calls on a small pool of their own (``pg_transaction``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from consent_relay import errors
from consent_relay.storage import checkpoint, driver, migrate, notices
from consent_relay.storage import engine as engines
from consent_relay.storage.tx import Tx

log = logging.getLogger("consent_relay.storage")
T = TypeVar("T")
PG_POOL_SIZE = 4  # pg_transaction's connections: a worker's claim and record, and room
# pg_transaction's connections for work whose commit need not wait for the disk
# (``durable=False``: a worker's claims, one at a time, and the room for one more).
PG_LIGHT_POOL_SIZE = 2
# Their sessions: as every session of ours, and commits that do not wait for the write-ahead
# log's flush (PostgreSQL's asynchronous commit).
PG_LIGHT_SESSION = {**engines.POSTGRES_SESSION, "synchronous_commit": "off"}


async def _keep_session(_conn: asyncpg.Connection[Any]) -> None:
    """``pg_transaction``'s pool gives a connection back as it is: the work run there (the
    worker's claim and record) leaves no session state behind (no ``SET``, ``LISTEN``,
    cursor or advisory lock outlives its transaction), and asyncpg still rolls back an open
    transaction before this is called. Its default reset (``RESET ALL``, ``CLOSE ALL``,
    ``UNLISTEN *``, ``pg_advisory_unlock_all()``) was a round trip more each claim and
    record."""


class Store:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = engines.is_sqlite_url(url)
        self.engine: AsyncEngine = engines.create_engine(url, pool_size=pool_size)
        self._sqlite_lock = asyncio.Lock() if self.is_sqlite else None
        self._closing = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        # The file of a SQLite database (None in memory), and the connection kept for
        # ``sqlite_transaction``, opened at its first use.
        self.sqlite_file = engines.sqlite_file(url) if self.is_sqlite else None
        self._hot: sqlite3.Connection | None = None
        # Its log's checkpoints, on a thread of their own (``storage.checkpoint``).
        self.checkpointer: checkpoint.Checkpointer | None = None
        # PostgreSQL: the raw connections of ``pg_transaction``, opened at their first use
        # (the second pool's for ``durable=False``).
        self._pg_pool: asyncpg.Pool[Any] | None = None
        self._pg_light_pool: asyncpg.Pool[Any] | None = None
        self._pg_pool_opening = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        async with engines.write_connection(self.engine, self._sqlite_lock) as conn:
            yield Tx(conn)

    async def sqlite_transaction(
        self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> T:
        """On a SQLite file: ``work`` (plain ``sqlite3`` calls) in a write transaction of its
        own (``driver.in_transaction``) on a connection kept for this, run on the event
        loop's thread, behind the same lock as ``write()``. While another connection holds
        the write lock, tried again every ``driver.BUSY_POLL_S`` or so, the loop running
        meanwhile, for ``driver.BUSY_PATIENCE_S``; then "database is locked"
        (``StorageUnavailable``).

        For the worker's claim and record, the service's busiest transactions. Through
        ``write()``, a transaction is SQLAlchemy's connection, ``BEGIN IMMEDIATE``, the
        work's hop, ``COMMIT`` and the pool's reset on return, each a hop to aiosqlite's
        thread and back: about 600 CPU-µs of the worker's an empty transaction, against
        about 60 in one hop (measured; docs/performance-log.md). And on aiosqlite's thread,
        even in one hop, the transaction gave the GIL up at each ``sqlite3`` call and waited
        to win it back from the event loop, which held it while it ran requests: a
        transaction took three times its CPU in wall time, ``BEGIN`` alone 5 ms, and the
        worker's requests ran dry while claims waited (the event loop busy 72 % of a drain,
        PostgreSQL's 89 %: ``bench.pipeline``). On the loop's thread there is no hop and no
        wait, and the loop does SQLite's work itself (docs/performance-log.md).

        ``durable=False``: the commit does not wait for the disk (``driver.in_transaction``),
        for work a crash may lose as if it had not run (a claim's leases).

        The write-ahead log's checkpoints are not this connection's commits' work but a
        thread's of their own (``storage.checkpoint``), told of each commit."""
        lock = self._sqlite_lock
        if lock is None or self.sqlite_file is None:
            raise RuntimeError("sqlite_transaction is for a database in a SQLite file")
        async with engines.translate_errors(), lock:
            if self._hot is None:
                self._hot = self._open_hot(self.sqlite_file)
                self.checkpointer = checkpoint.Checkpointer(self.sqlite_file)
            deadline = time.monotonic() + driver.BUSY_PATIENCE_S
            while True:
                try:
                    result = driver.in_transaction(self._hot, work, durable=durable)
                    if self.checkpointer is not None:
                        self.checkpointer.committed()
                    return result
                except driver.Busy as busy:
                    if time.monotonic() >= deadline:
                        raise busy.error from None
                await asyncio.sleep(driver.BUSY_POLL_S * (0.5 + random.random()))

    @staticmethod
    def _open_hot(path: Path) -> sqlite3.Connection:
        # Used from the event loop's thread only, behind the lock; not bound to the thread
        # that opened it, as an event loop may run on another thread than the first.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in engines.SQLITE_PRAGMAS:
                conn.execute(f"PRAGMA {pragma}")
            # Waits for the write lock in sqlite_transaction instead (see there).
            conn.execute("PRAGMA busy_timeout=0")
            # Checkpoints are a thread's (``storage.checkpoint``); this one's, the bound.
            conn.execute(f"PRAGMA wal_autocheckpoint={checkpoint.BOUND_PAGES}")
        except BaseException:
            conn.close()
            raise
        return conn

    async def pg_transaction(
        self,
        work: Callable[[asyncpg.Connection[Any]], Awaitable[T]],
        *,
        begin: bool = True,
        durable: bool = True,
    ) -> T:
        """On PostgreSQL: ``work`` (raw ``asyncpg`` calls) in a transaction of its own, on a
        connection of a small pool kept for this (``PG_POOL_SIZE``); with ``begin=False``, no
        transaction is opened (for a single statement, which is then its own: one round
        trip instead of three).

        ``sqlite_transaction``'s twin, for the worker's claim and record: through
        ``write()``, SQLAlchemy's connection, transaction and pool cost about 260 CPU-µs
        of the worker's a transaction beside the statements (measured:
        docs/performance-log.md).

        ``durable=False``: on a connection whose commits do not wait for the write-ahead
        log's flush (``PG_LIGHT_SESSION``, a pool of its own), for work a crash of the server
        may lose as if it had not run: a claim's leases (a lost lease is one that ran out).
        The log is written in order and a durable commit flushes it up to its own record,
        so such a transaction is lost only together with every one committed after it."""
        if self.is_sqlite:
            raise RuntimeError("pg_transaction is for a PostgreSQL database")
        async with engines.translate_errors():
            if durable:
                pool = self._pg_pool or await self._open_pg_pool()
            else:
                pool = self._pg_light_pool or await self._open_pg_light_pool()
            async with pool.acquire() as conn:
                if not begin:
                    return await work(conn)
                async with conn.transaction():
                    return await work(conn)

    async def _open_pg_pool(self) -> asyncpg.Pool[Any]:
        async with self._pg_pool_opening:
            if self._pg_pool is None:
                self._pg_pool = await self._raw_pool(PG_POOL_SIZE, engines.POSTGRES_SESSION)
            return self._pg_pool

    async def _open_pg_light_pool(self) -> asyncpg.Pool[Any]:
        async with self._pg_pool_opening:
            if self._pg_light_pool is None:
                self._pg_light_pool = await self._raw_pool(PG_LIGHT_POOL_SIZE, PG_LIGHT_SESSION)
            return self._pg_light_pool

    async def _raw_pool(self, size: int, session: dict[str, str]) -> asyncpg.Pool[Any]:
        dsn = make_url(self.url).set(drivername="postgresql")
        return await asyncpg.create_pool(
            dsn.render_as_string(hide_password=False),
            min_size=1,
            max_size=size,
            server_settings=session,
            command_timeout=30,
            reset=_keep_session,
        )

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
        if self.checkpointer is not None:
            checkpointer, self.checkpointer = self.checkpointer, None
            await asyncio.to_thread(checkpointer.stop)
        if self._hot is not None:
            hot, self._hot = self._hot, None
            hot.close()
        for pool in (self._pg_pool, self._pg_light_pool):
            if pool is not None:
                await pool.close()
        self._pg_pool = self._pg_light_pool = None
        await self.engine.dispose()
