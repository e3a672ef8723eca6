"""The raw driver under an open transaction, for the hot statements.

SQLAlchemy Core carries every statement of the service; on the two hot paths (the batch of
the write path, the worker's claim and record) its per-statement cost (cache key, compiled
parameters, result rows, the greenlet bridge) was measured as a share of the whole, so those
statements go to asyncpg directly, on the same connection and inside the same transaction.

SQLAlchemy's asyncpg adapter begins its transaction lazily, at the first statement it runs
itself: a statement sent to asyncpg before that would run outside the transaction, in
autocommit. ``postgres`` therefore begins it first (through the adapter, so that SQLAlchemy's
commit and rollback still end it). This reaches into the adapter's private state; the
contract test ``tests/integration/test_driver.py`` fails if a SQLAlchemy release changes it
(a raw write rolled back with the transaction, a raw read seeing the transaction's writes).

On SQLite, aiosqlite runs each statement on its connection's own thread: a hop there and
back a statement (two with the cursor), with the GIL handed over each way. ``on_sqlite`` runs
a whole function of plain ``sqlite3`` calls in one hop instead, on the same connection and so
inside the same transaction (``BEGIN IMMEDIATE`` was sent when the transaction began;
``tests/integration/test_driver.py`` checks it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncpg

    from consent_relay.storage.tx import Tx


async def postgres(tx: Tx) -> asyncpg.Connection[Any] | None:
    """The asyncpg connection of ``tx``, its transaction begun; None on SQLite."""
    if tx.dialect != "postgresql":
        return None
    if tx.driver is None:
        raw = await tx.conn.get_raw_connection()
        adapted: Any = raw.dbapi_connection
        async with adapted._execute_mutex:
            if adapted._transaction is None:
                await adapted._start_transaction()
        tx.driver = raw.driver_connection
    return tx.driver


T = TypeVar("T")


async def on_sqlite(tx: Tx, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` with the transaction's sqlite3 connection, on aiosqlite's thread, in one
    hop. SQLite only."""
    assert tx.dialect == "sqlite"
    raw = await tx.conn.get_raw_connection()
    connection: Any = raw.dbapi_connection._connection  # type: ignore[union-attr]  # aiosqlite's
    result: T = await connection._execute(lambda: work(connection._conn))
    return result


# ``Store.sqlite_transaction``'s wait for the write lock: a try every millisecond or so,
# for as long as the busy timeout of every other connection (engine.SQLITE_PRAGMAS).
BUSY_POLL_S = 0.001
BUSY_PATIENCE_S = 10.0


class Busy(Exception):
    """Another connection holds the write lock: ``in_transaction``'s ``BEGIN IMMEDIATE``
    was refused at once (``error``: SQLite's "database is locked")."""

    def __init__(self, error: sqlite3.OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


def synchronous_level(db: sqlite3.Connection) -> int:
    """The connection's ``PRAGMA synchronous``: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA."""
    return int(db.execute("PRAGMA synchronous").fetchone()[0])


def in_transaction(
    db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
) -> T:
    """``work`` in a write transaction of its own on ``db`` (``BEGIN IMMEDIATE``, then
    ``COMMIT``; ``ROLLBACK`` if anything fails, the commit included), on the calling thread:
    ``Store.sqlite_transaction`` runs it on the event loop's.

    ``db`` has no busy timeout (``busy_timeout=0``): while another connection holds the
    write lock, ``Busy`` is raised at once, and the caller tries again (every
    ``BUSY_POLL_S``, with a little jitter, for ``BUSY_PATIENCE_S``) without holding up its
    thread, the event loop's. SQLite's own busy handler sleeps, and backs off to 100 ms
    between tries: a worker whose transactions follow each other closely took the lock
    every time, and a second worker process on the same file sent nothing (seen in
    test_crash_safety's two claimers, 1,000 and 0).

    With ``durable=False`` the commit does not wait for the disk (``synchronous=NORMAL``
    for this transaction, the connection's own level again after it): for work whose loss
    in a crash of the machine is the same as its never having run, such as a claim's leases
    (a lost lease is one that ran out). The write-ahead log is one file written in order, so
    the next durable commit on the database syncs this transaction's pages with its own: a
    crash can lose it only together with everything committed after it."""
    level = None
    if not durable:
        level = synchronous_level(db)
        db.execute("PRAGMA synchronous=NORMAL")
    try:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY:
                raise Busy(exc) from exc
            raise
        try:
            result = work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return result
    finally:
        if level is not None:
            db.execute(f"PRAGMA synchronous={level}")


class Record:
    """An asyncpg record read by attribute, as the ``Tx`` mappers read SQLAlchemy's rows."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return self._record[name]
