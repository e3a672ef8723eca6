"""Probes of the raw driver path (``driver.py``), for its contract test: a bare organization
written and counted through the transaction's own asyncpg or sqlite3 connection, and the
error SQLAlchemy's asyncpg adapter raises for a connection the server has closed.

The service never calls these. ``tests/integration/test_driver.py`` uses them to check that
what goes to the driver directly belongs to the transaction SQLAlchemy began (rolled back or
committed with it, seen by SQLAlchemy's statements and seeing theirs); the tests of the
worker's raw statements on PostgreSQL use the others (what a record or a transaction sends,
PostgreSQL's ledger chain, the claim's plan, whether a transaction's commit waits for the
disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from sqlalchemy.dialects.postgresql import asyncpg as adapter

from consent_relay.storage import batches, driver, queue, queue_pg
from consent_relay.storage.tx import Tx

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Sequence

    from consent_relay.storage.queue import Result
    from consent_relay.storage.store import Store

T = TypeVar("T")

_INSERT_PG = "INSERT INTO organizations (id, name, created_at) VALUES ($1, $1, 'x')"
_INSERT_SQLITE = "INSERT INTO organizations (id, name, created_at) VALUES (:id, :id, 'x')"
_COUNT_PG = "SELECT count(*) FROM organizations WHERE id = $1"
_COUNT_ALL_PG = "SELECT count(*) FROM organizations"


async def insert_organization(tx: Tx, org_id: str) -> None:
    """A bare organization ``org_id`` (named after itself), written through the raw driver:
    asyncpg on PostgreSQL, one ``driver.on_sqlite`` hop on SQLite."""
    conn = await driver.postgres(tx)
    if conn is not None:
        await conn.execute(_INSERT_PG, org_id)
        return

    def insert(db: sqlite3.Connection) -> None:
        db.execute(_INSERT_SQLITE, {"id": org_id})

    await driver.on_sqlite(tx, insert)


async def count_organizations(tx: Tx, org_id: str) -> int:
    """How many organizations ``org_id`` there are, read through asyncpg (PostgreSQL)."""
    conn = await driver.postgres(tx)
    if conn is None:
        raise ValueError("count_organizations reads through asyncpg: PostgreSQL only")
    return int(await conn.fetchval(_COUNT_PG, org_id))


def closed_connection_error() -> Exception:
    """The error SQLAlchemy's asyncpg adapter raises, unwrapped, when the raw path begins a
    transaction on a connection the server has just closed (its DBAPI ``Error``)."""
    dbapi: Any = adapter.AsyncAdapt_asyncpg_dbapi(asyncpg)  # type: ignore[no-untyped-call]
    error: Exception = dbapi.Error("connection was closed in the middle of operation")
    return error


async def pg_transaction_statements(store: Store) -> list[str]:
    """What a ``Store.pg_transaction`` sends on its connection after its work (a count of
    organizations) until the connection is back in its pool: the ``COMMIT``, and whatever
    the pool's reset sends (asyncpg's query logger on that connection; it stays
    there, deaf once this returns: a released connection takes no calls)."""
    sent: list[str] = []
    listening = True

    def log(record: Any) -> None:
        if listening:
            sent.append(record.query)

    async def work(conn: asyncpg.Connection[Any]) -> None:
        await conn.fetchval(_COUNT_ALL_PG)
        conn.add_query_logger(log)

    await store.pg_transaction(work)
    await asyncio.sleep(0)  # asyncpg schedules the logger's calls (call_soon)
    listening = False
    return sent


_UPDATES_PG = """
    SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'deliveries'
"""


async def record_updates(
    store: Store, results: Sequence[Result], *, now_ms: int, now: str
) -> tuple[int, int]:
    """Record ``results`` as the worker does on PostgreSQL (``queue.record_pg`` in a
    ``Store.pg_transaction``) and return the updates of the ``deliveries`` table made in
    that transaction: ``(all, HOT)`` (a HOT update writes no index entry)."""

    async def work(raw: asyncpg.Connection[Any]) -> tuple[int, int]:
        await queue.record_pg(raw, results, now_ms=now_ms, now=now, with_attempts=True, chain=None)
        row = await raw.fetchrow(_UPDATES_PG)
        assert row is not None
        return int(row[0]), int(row[1])

    return await store.pg_transaction(work)


async def generic_claim_plan(store: Store, *, now_ms: int) -> str:
    """PostgreSQL: the generic plan of the worker's claim (``queue.claim_sql`` as
    ``queue.claim_pg`` sends it), as ``EXPLAIN (FORMAT JSON)`` text: the plan a prepared
    statement settles on after its first executions, whatever the values (asyncpg prepares
    the claim once a connection, and PostgreSQL keeps that plan while it costs no more than
    the custom ones). EXPLAIN only: nothing runs."""
    sql, names = queue_pg.positional(queue.claim_sql("postgresql", True))
    params: dict[str, Any] = {
        "now": now_ms, "limit": 100, "lease": "'plan'", "until": now_ms + 1, "excluded": "'[]'",
    }  # fmt: skip

    async def work(raw: asyncpg.Connection[Any]) -> str:
        await raw.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await raw.execute(f"PREPARE consent_relay_claim_plan AS {sql}")
        try:
            values = ", ".join(str(params[name]) for name in names)
            plan = await raw.fetchval(
                f"EXPLAIN (FORMAT JSON) EXECUTE consent_relay_claim_plan({values})"
            )
        finally:
            await raw.execute("DEALLOCATE consent_relay_claim_plan")
        return str(plan)

    return await store.pg_transaction(work)


async def ledger_chain(store: Store, prev_hash: str, texts: Sequence[str]) -> list[str]:
    """The hashes PostgreSQL's ``ledger_chain`` (migration 0016) gives ``texts`` chained
    from ``prev_hash``: what the worker's record hashes on the server (``ledger.pg_ctes``),
    for the test that holds it to ``domain.ledger``."""

    async def work(raw: asyncpg.Connection[Any]) -> list[str]:
        return list(await raw.fetchval("SELECT ledger_chain($1, $2)", prev_hash, list(texts)))

    return await store.pg_transaction(work, begin=False)


async def record_statements(
    store: Store, results: Sequence[Result], *, now_ms: int, now: str
) -> tuple[batches.Recorded, list[str]]:
    """Record ``results`` as the worker does (``batches.record``) and return what was
    recorded with the statements sent on the worker's raw connections meanwhile (asyncpg's
    query logger on each connection ``Store.pg_transaction`` hands out)."""
    sent: list[str] = []
    pg_transaction = store.pg_transaction

    def log(record: Any) -> None:
        sent.append(record.query)

    async def logged(work: Callable[[asyncpg.Connection[Any]], Awaitable[T]], **options: Any) -> T:
        async def on(raw: asyncpg.Connection[Any]) -> T:
            raw.add_query_logger(log)
            try:
                return await work(raw)
            finally:
                raw.remove_query_logger(log)

        return await pg_transaction(on, **options)

    store.pg_transaction = logged  # type: ignore[method-assign]
    try:
        recorded = await batches.record(store, results, now_ms=now_ms, now=now)
    finally:
        del store.pg_transaction  # the class's again
    await asyncio.sleep(0)  # asyncpg schedules the logger's calls (call_soon)
    return recorded, sent


# Whether a transaction's commit waits for the disk: on SQLite, ``synchronous`` FULL (2) or
# EXTRA (3) syncs the write-ahead log at each commit, NORMAL (1) and OFF (0) do not; on
# PostgreSQL every ``synchronous_commit`` but ``off`` waits for the log's local flush.
_SYNCHRONOUS_PG = "SELECT current_setting('synchronous_commit')"


def _waits_sqlite(db: sqlite3.Connection) -> bool:
    return driver.synchronous_level(db) >= 2


async def _waits_pg(raw: asyncpg.Connection[Any]) -> bool:
    return str(await raw.fetchval(_SYNCHRONOUS_PG)) != "off"


async def commit_waits(store: Store, *, durable: bool) -> bool:
    """Whether a transaction of the worker's own path (``Store.sqlite_transaction`` on a
    SQLite file, ``Store.pg_transaction`` on PostgreSQL) given ``durable`` commits only once
    its changes are on disk."""
    if store.is_sqlite:
        return await store.sqlite_transaction(_waits_sqlite, durable=durable)
    return await store.pg_transaction(_waits_pg, begin=False, durable=durable)


@contextlib.contextmanager
def commit_waits_of_transactions(store: Store) -> Iterator[list[bool]]:
    """While inside: for each transaction of the worker's own path, in order, whether its
    commit waits for the disk (read on its connection before its work runs)."""
    seen: list[bool] = []
    if store.is_sqlite:
        sqlite_transaction = store.sqlite_transaction

        async def on_sqlite(work: Callable[[sqlite3.Connection], T], **options: Any) -> T:
            def first_read(db: sqlite3.Connection) -> T:
                seen.append(_waits_sqlite(db))
                return work(db)

            return await sqlite_transaction(first_read, **options)

        store.sqlite_transaction = on_sqlite  # type: ignore[method-assign]
    else:
        pg_transaction = store.pg_transaction

        async def on_pg(
            work: Callable[[asyncpg.Connection[Any]], Awaitable[T]], **options: Any
        ) -> T:
            async def first_read(raw: asyncpg.Connection[Any]) -> T:
                seen.append(await _waits_pg(raw))
                return await work(raw)

            return await pg_transaction(first_read, **options)

        store.pg_transaction = on_pg  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        delattr(store, "sqlite_transaction" if store.is_sqlite else "pg_transaction")


def synchronous_around_a_transaction(path: str, level: int, *, durable: bool) -> tuple[int, int]:
    """On a fresh connection to the SQLite file ``path`` at ``synchronous`` ``level``: the
    level a transaction given ``durable`` (``driver.in_transaction``) commits with, and
    the connection's level after it."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"PRAGMA synchronous={int(level)}")
        inside = driver.in_transaction(db, driver.synchronous_level, durable=durable)
        return inside, driver.synchronous_level(db)
    finally:
        db.close()


def autocheckpoint_pages(db: sqlite3.Connection) -> int:
    """The connection's ``PRAGMA wal_autocheckpoint``: the pages of write-ahead log past
    which its own commit checkpoints (0: never)."""
    return int(db.execute("PRAGMA wal_autocheckpoint").fetchone()[0])


_FILLER_SQLITE = "INSERT INTO organizations (id, name, created_at) VALUES (?, ?, 'x')"


def filler(prefix: str, rows: int, size: int) -> Callable[[sqlite3.Connection], None]:
    """Work for ``Store.sqlite_transaction`` that writes ``rows`` bare organizations
    (``prefix``-0, -1, ...) with names of ``size`` characters: pages of write-ahead log."""

    def write(db: sqlite3.Connection) -> None:
        db.executemany(
            _FILLER_SQLITE,
            [(f"{prefix}-{i}", f"{prefix}-{i}".ljust(size, "x")) for i in range(rows)],
        )

    return write


def page_size(db: sqlite3.Connection) -> int:
    """The database's page size in bytes (a frame of write-ahead log is that and 24)."""
    return int(db.execute("PRAGMA page_size").fetchone()[0])
