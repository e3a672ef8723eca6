"""The database server itself, for tests, benchmarks and drills: database URLs taken apart,
PostgreSQL databases created, listed and dropped, every table emptied, the planner's
statistics gathered, the server's client sessions listed and ended.

The service never calls these (its own questions about the server, such as its clock, are in
``system.py``). Names given to ``create_database`` and ``drop_database`` are quoted here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from consent_relay.storage.tables import metadata
from consent_relay.storage.tx import Tx

# -- URLs -------------------------------------------------------------------------------------


def database_name(url: str) -> str | None:
    """The database a URL names: a PostgreSQL database, or the path of a SQLite file."""
    return make_url(url).database


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///`` URL."""
    return Path(str(make_url(url).database))


def host_and_port(url: str) -> tuple[str, int]:
    """The PostgreSQL server a URL points at (127.0.0.1:5432 unless it says otherwise)."""
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def with_port(url: str, port: int) -> str:
    """The same URL through another port (a proxy in front of the server, say)."""
    return make_url(url).set(port=port).render_as_string(hide_password=False)


# -- databases on a PostgreSQL server ---------------------------------------------------------


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _connect(url: str) -> asyncpg.Connection:
    parsed = make_url(url)
    return await asyncpg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
    )


async def _on_server(url: str, statement: str) -> None:
    conn = await _connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(server_url: str, name: str, icu_locale: str | None = None) -> str:
    """A new, empty database ``name`` (an older one of that name is dropped first) on the
    server of ``server_url``, whose own database must exist; returns its URL. With
    ``icu_locale`` (``"en-US"``), the database's default collation is that ICU locale's."""
    await drop_database(server_url, name)
    locale = ""
    if icu_locale is not None:
        if not icu_locale.replace("-", "").isalnum():
            raise ValueError(f"not an ICU locale name: {icu_locale!r}")
        locale = f" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '{icu_locale}'"
    await _on_server(server_url, f"CREATE DATABASE {_quoted(name)}{locale}")
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop the database ``name`` if it exists, ending its sessions."""
    await _on_server(server_url, f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")


async def database_names(server_url: str) -> set[str]:
    """Every database on the server of ``server_url``."""
    conn = await _connect(server_url)
    try:
        return {str(row[0]) for row in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()


async def empty_tables(tx: Tx) -> None:
    """Remove every row of every table of the schema and restart the key sequences
    (PostgreSQL: a migrated database made as good as new, faster than migrating again)."""
    if tx.dialect != "postgresql":
        raise ValueError("empty_tables is for PostgreSQL (SQLite: start a new file)")
    names = ", ".join(_quoted(table.name) for table in metadata.sorted_tables)
    await tx.conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))


async def clear_tables(tx: Tx, *, keep: Collection[str] = ()) -> None:
    """Delete every row of every table of the schema but the tables named in ``keep``
    (children before parents; both databases, inside the caller's transaction)."""
    for table in reversed(metadata.sorted_tables):
        if table.name not in keep:
            await tx.conn.execute(table.delete())


async def analyze(tx: Tx) -> None:
    """Have the database gather its planner's statistics on every table (``ANALYZE``)."""
    await tx.conn.execute(text("ANALYZE"))


# -- client sessions (PostgreSQL) -------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One client session on this database: its client's port and its last statement."""

    client_port: int | None
    query: str


_BACKENDS = text(
    "SELECT client_port, query FROM pg_stat_activity"
    " WHERE datname = current_database() AND client_port IS NOT NULL"
)

_TERMINATE = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name = :name"
)


async def backends(tx: Tx) -> list[Backend]:
    """The sessions on this database of clients that came over TCP."""
    result = await tx.conn.execute(_BACKENDS)
    return [Backend(row.client_port, row.query) for row in result]


async def terminate_sessions(tx: Tx, application_name: str) -> int:
    """End every session on this database whose application is ``application_name``, as a
    lost connection would; returns how many there were."""
    killed = await tx.conn.scalar(_TERMINATE, {"name": application_name})
    return int(killed or 0)
