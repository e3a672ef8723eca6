"""Reading a statement's plan in a plan test, then leaving the database its statistics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from consent_relay.runtime import Context
from consent_relay.storage import databases
from consent_relay.storage.tx import Tx


async def read_plan(ctx: Context, plan_of: Callable[[Tx], Awaitable[str]]) -> str:
    """The plan ``plan_of`` reads (``inspect.claim_plan``, ...: EXPLAIN without ANALYZE runs
    nothing). Whatever happens, the statistics are gathered again afterwards: the PostgreSQL
    test database outlives the test, and a later test must not inherit "no statistics"."""
    try:
        async with ctx.store.read() as tx:
            return await plan_of(tx)
    finally:
        async with ctx.store.write() as tx:
            await databases.analyze(tx)
