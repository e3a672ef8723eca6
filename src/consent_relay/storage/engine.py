"""Connecting to the database: the one place where SQLite and PostgreSQL differ in setup.

- SQLite: WAL, ``synchronous=FULL`` (an acknowledged change survives a crash), foreign keys,
  a busy timeout, and write transactions opened with ``BEGIN IMMEDIATE`` behind an in-process
  lock, so that writers queue instead of failing with "database is locked".
- SQLite: the file is private to its owner: created 0600 (its ``-wal`` and ``-shm`` take the
  same mode from it), in a folder created 0700 (``_private_sqlite_file``).
- PostgreSQL: asyncpg through SQLAlchemy's async engine, JIT off for short statements, and
  plans that keep to the indexes even before statistics exist (``POSTGRES_SESSION``).
Driver errors become our own exceptions here (``translate_errors``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from consent_relay import errors


def async_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+asyncpg://``; ``sqlite:///`` -> ``sqlite+aiosqlite:///``."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise errors.BadRequest(f"unsupported database URL scheme {parsed.drivername!r}")


def is_sqlite_url(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL's database; None for one in memory."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database)


# Every statement of ours is an index lookup or an index range. On a freshly filled table
# (statistics not yet gathered) the planner guessed a handful of rows and scanned the whole
# table instead: 263 ms rather than 0.5 ms for one batch at 20,000 rows, growing with the table.
# enable_seqscan=off only makes sequential scans a last resort (a count still uses one).
POSTGRES_SESSION = {"jit": "off", "enable_seqscan": "off"}


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if is_sqlite_url(url):
        path = sqlite_file(url)
        if path is not None:
            _private_sqlite_file(path)
        engine = create_async_engine(async_url(url), pool_size=pool_size, max_overflow=0)
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={"server_settings": POSTGRES_SESSION, "command_timeout": 30},
    )
    _drop_closed_connections(engine)
    return engine


def _drop_closed_connections(engine: AsyncEngine) -> None:
    """A pooled connection the server closed (a restart, an idle timeout) is replaced at
    checkout, with no round trip: asyncpg marks a connection closed as soon as its socket
    ends, on the event loop. (SQLAlchemy's ``pool_pre_ping`` did the same with three round
    trips a checkout, BEGIN, an empty statement and ROLLBACK: about 120 CPU-us of the
    worker's a transaction, measured. A connection that dies silently, no FIN, fails its
    first statement instead, which invalidates the pool: ``StorageUnavailable``, retried.)"""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.driver_connection.is_closed():
            raise sqlalchemy.exc.DisconnectionError("the server closed this connection")


def _private_sqlite_file(path: Path) -> None:
    """Create the database file empty with mode 0600 (and its folder 0700) before SQLite opens
    it: SQLite would create it 0644 under the usual umask, readable by every local user, and
    gives the ``-wal`` and ``-shm`` files the mode of the database file. An existing file or
    folder keeps the mode it has (the operator's choice); an empty file is an empty database."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


# Every SQLite connection's settings, in this order (bench.sqlite_statements uses them too).
SQLITE_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=FULL",
    "foreign_keys=ON",
    "busy_timeout=10000",
    "secure_delete=ON",  # erased data is zeroed, not left in free pages (privacy)
)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN into our own hands (see _on_begin); the driver's own is not immediate.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("sqlite_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return True
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # pool exhausted
        return True
    text = str(exc).lower()
    return any(
        marker in text
        for marker in (
            "database is locked",
            "connection was closed",
            "connection refused",
            "cannot connect",
            "the database system is",
            "terminating connection",
            "connectiondoesnotexist",
            "server closed the connection",
        )
    )


@contextlib.asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Driver errors -> our exceptions: unreachable or busy -> StorageUnavailable (503)."""
    try:
        yield
    except errors.ConsentRelayError:
        raise
    except (sqlalchemy.exc.IntegrityError, asyncpg.IntegrityConstraintViolationError) as exc:
        # (asyncpg's own: a statement sent to the driver directly, storage/driver.py)
        raise errors.Conflict(f"conflicting write: {_first_line(exc)}") from exc
    except (TimeoutError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        if isinstance(exc, OSError | asyncio.TimeoutError) or _is_unavailable(exc):
            raise errors.StorageUnavailable() from exc
        raise
    except Exception as exc:
        # asyncpg raises its own connection errors outside SQLAlchemy's tree at times, and
        # so does SQLAlchemy's asyncpg adapter when the raw driver path (storage/driver.py)
        # begins a transaction on a connection the server has just closed (its DBAPI
        # ``Error``, not wrapped in SQLAlchemy's ``DBAPIError``).
        if _is_unavailable(exc):
            raise errors.StorageUnavailable() from exc
        if "connection" in type(exc).__name__.lower():
            raise errors.StorageUnavailable() from exc
        raise


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0][:200]


@contextlib.asynccontextmanager
async def write_connection(
    engine: AsyncEngine, sqlite_lock: asyncio.Lock | None
) -> AsyncIterator[AsyncConnection]:
    """A connection inside a write transaction, committed on success."""
    async with translate_errors():
        if sqlite_lock is not None:
            async with sqlite_lock, engine.connect() as conn:
                conn = await conn.execution_options(sqlite_write=True)
                async with conn.begin():
                    yield conn
        else:
            async with engine.connect() as conn, conn.begin():
                yield conn


@contextlib.asynccontextmanager
async def read_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with translate_errors(), engine.connect() as conn, conn.begin():
        yield conn
