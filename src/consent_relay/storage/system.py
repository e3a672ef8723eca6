"""Questions about the database server itself."""

from __future__ import annotations

from sqlalchemy import text

from consent_relay.storage.tx import Tx

_SERVER_NOW_MS = text("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)")


async def server_now_ms(tx: Tx) -> int:
    """The PostgreSQL server's wall clock, in milliseconds since the epoch (the clock that
    every worker on every machine agrees on). Not on SQLite, whose server is this machine."""
    if tx.dialect != "postgresql":
        raise ValueError("server_now_ms is for PostgreSQL (SQLite: read this machine's clock)")
    return int((await tx.conn.execute(_SERVER_NOW_MS)).scalar_one())
