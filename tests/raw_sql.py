"""SQL text run straight on the test database: only for the tests not yet moved to the named
queries of ``consent_relay.storage`` (``inspect``, ``tamper``, ``databases``).

New tests do not use these; tests/unit/test_no_sql_in_tests.py lists the files that still do.
Delete this module once the last of them is converted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from consent_relay.runtime import Context


async def scalar(ctx: Context, sql: str, **params: Any) -> Any:
    async with ctx.store.read() as tx:
        return (await tx.conn.execute(text(sql), params)).scalar()


async def rows(ctx: Context, sql: str, **params: Any) -> list[Any]:
    async with ctx.store.read() as tx:
        return list(await tx.conn.execute(text(sql), params))
