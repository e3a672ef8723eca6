"""Appending many deliveries at once: sequence numbers and heads stay right however many
queues one append touches (the batch is one JSON parameter; PostgreSQL allows 32,767 bound
parameters a statement, which an append of 8,192 queues once went over)."""

from __future__ import annotations

from consent_relay.runtime import Context
from consent_relay.storage import inspect, queue


async def _append(ctx: Context, items: list[tuple[str, str, str, str]]) -> list[str]:
    now_ms = ctx.clock_ms()
    async with ctx.store.write() as tx:
        return await queue.append(tx, items, now_ms, "2026-01-01T00:00:00.000Z")


async def test_an_append_of_ten_thousand_queues_succeeds(ctx: Context) -> None:
    """Ten thousand queues need 40,000 parameters: more than one statement may carry."""
    users = 10_000
    new_ids = await _append(ctx, [("acme", "wh_1", f"msg_{n}", f"u{n}") for n in range(users)])
    assert len(set(new_ids)) == users
    async with ctx.store.read() as tx:
        rows = await inspect.deliveries_with_clock(tx)
        queues = await inspect.rows(tx, "delivery_queues")
    assert len(rows) == users
    assert {row["seq"] for row in rows} == {1}
    assert all(row["due_ms"] is not None for row in rows)  # every one heads its own queue
    assert len(queues) == users
    assert {q["last_seq"] for q in queues} == {1}


async def test_successive_appends_keep_each_queues_order(ctx: Context) -> None:
    first = [("acme", "wh_1", f"msg_a{n}", f"u{n % 5}") for n in range(10)]
    second = [("acme", "wh_1", f"msg_b{n}", f"u{n % 5}") for n in range(5)]
    ids_first = await _append(ctx, first)
    ids_second = await _append(ctx, second)
    async with ctx.store.read() as tx:
        rows = await inspect.deliveries_with_clock(tx)
    by_id = {r["id"]: r for r in rows}
    for user in range(5):
        mine = [i for i, item in zip(ids_first, first, strict=True) if item[3] == f"u{user}"]
        mine += [i for i, item in zip(ids_second, second, strict=True) if item[3] == f"u{user}"]
        assert [by_id[i]["seq"] for i in mine] == [1, 2, 3]  # in append order, no gap
        assert [by_id[i]["due_ms"] is not None for i in mine] == [True, False, False]  # one head
