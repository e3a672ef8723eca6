"""A head that finishes while an append to its queue is still open (PostgreSQL's READ
COMMITTED): the worker's record waits for the append's lock on the queue row, then must see
the appended delivery and make it the due head. When the queue update and the promotion were
one statement, the promotion looked in the snapshot taken before the wait, missed it, and the
queue stayed with no due head for ever (found by tests/e2e/test_postgres_restart.py)."""

from __future__ import annotations

import asyncio

from consent_relay.runtime import Context
from consent_relay.storage import driver, inspect, queue, queue_pg
from tests.e2e.helpers import eventually

NOW = "2026-01-01T00:00:00.000Z"


async def test_a_head_finished_during_an_append_hands_on_to_the_appended_delivery(
    ctx: Context,
) -> None:
    if ctx.store.is_sqlite:
        return  # SQLite's write transactions run one at a time: no such interleaving
    now_ms = ctx.clock_ms()
    async with ctx.store.write() as tx:
        [head] = await queue.append(tx, [("acme", "wh_1", "msg_1", "u1")], now_ms, NOW)

    appended = asyncio.Event()
    commit_append = asyncio.Event()

    async def append_then_wait() -> str:
        async with ctx.store.write() as tx:
            [new] = await queue.append(tx, [("acme", "wh_1", "msg_2", "u1")], now_ms, NOW)
            appended.set()
            await commit_append.wait()  # the queue row stays locked until this commits
        return new

    async def finish_head() -> None:
        async with ctx.store.write() as tx:
            conn = await driver.postgres(tx)
            assert conn is not None
            await queue_pg.finish(conn, [("wh_1", "u1", 1)], [], now_ms, NOW)

    appending = asyncio.create_task(append_then_wait())
    await appended.wait()
    finishing = asyncio.create_task(finish_head())

    async def finisher_waits() -> bool:
        async with ctx.store.read() as tx:
            return await inspect.sessions_waiting_for_locks(tx) >= 1

    await eventually(finisher_waits, within=10, what="the finish to wait for the queue row")
    commit_append.set()
    new = await appending
    await finishing

    async with ctx.store.read() as tx:
        rows = {r["id"]: r for r in await inspect.rows(tx, "deliveries")}
        [queue_row] = await inspect.rows(tx, "delivery_queues")
    assert rows[head]["seq"] == 1
    assert rows[new]["seq"] == 2
    assert rows[new]["due_ms"] is not None  # the next head is due, not stranded
    assert queue_row["pending"] == 1
