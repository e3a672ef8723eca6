"""A head that finishes while an append to its queue is still open (PostgreSQL's READ
COMMITTED): the worker's record waits for the append's lock on the queue row, then must count
the appended delivery and make it the due head. When the queue update and the promotion of
the next head were separate reads of the deliveries, a promotion that looked in the snapshot
taken before the wait missed it, and the queue stayed with no due head for ever (found by
tests/e2e/test_postgres_restart.py). Since the queue row carries its head's clock (migration
0009) the record's update reads the row it waited for: this test keeps it so."""

from __future__ import annotations

import asyncio

from consent_relay import ids
from consent_relay.runtime import Context
from consent_relay.storage import inspect, queue, tamper
from consent_relay.storage.queue import Result
from tests.e2e.helpers import eventually
from tests.rows import webhook_row

NOW = "2026-01-01T00:00:00.000Z"


async def test_a_head_finished_during_an_append_hands_on_to_the_appended_delivery(
    ctx: Context,
) -> None:
    if ctx.store.is_sqlite:
        return  # SQLite's write transactions run one at a time: no such interleaving
    now_ms = ctx.clock_ms()
    async with ctx.store.write() as tx:
        await tamper.insert_rows(tx, "webhooks", [webhook_row()])
        [head] = await queue.append(tx, [("acme", "wh_1", "msg_1", "u1")], now_ms, NOW)
        [claimed] = await queue.claim(
            tx, limit=10, now_ms=now_ms, lease="worker", lease_ms=60_000, with_messages=False
        )
    assert claimed.id == head

    appended = asyncio.Event()
    commit_append = asyncio.Event()

    async def append_then_wait() -> str:
        async with ctx.store.write() as tx:
            [new] = await queue.append(tx, [("acme", "wh_1", "msg_2", "u1")], now_ms, NOW)
            appended.set()
            await commit_append.wait()  # the queue row stays locked until this commits
        return new

    async def finish_head() -> list[Result]:
        delivered = Result(
            claimed=claimed,
            status="delivered",
            due_ms=None,
            outcome="ok",
            attempt_id=ids.new_id("atm"),
            started_at=NOW,
            duration_ms=5,
            status_code=204,
            response_body="",
            request_headers={},
            error=None,
        )
        async with ctx.store.write() as tx:
            return await queue.record(tx, [delivered], now_ms=now_ms, now=NOW)

    appending = asyncio.create_task(append_then_wait())
    await appended.wait()
    finishing = asyncio.create_task(finish_head())

    async def finisher_waits() -> bool:
        async with ctx.store.read() as tx:
            return await inspect.sessions_waiting_for_locks(tx) >= 1

    await eventually(finisher_waits, within=10, what="the record to wait for the queue row")
    commit_append.set()
    new = await appending
    assert [r.claimed.id for r in await finishing] == [head]

    async with ctx.store.read() as tx:
        rows = {r["id"]: r for r in await inspect.deliveries_with_clock(tx)}
        [queue_row] = await inspect.rows(tx, "delivery_queues")
    assert (rows[head]["seq"], rows[head]["status"]) == (1, "delivered")
    assert rows[new]["seq"] == 2
    assert rows[new]["due_ms"] == now_ms  # the next head is due, not stranded
    assert (queue_row["pending"], queue_row["lease_owner"]) == (1, None)
