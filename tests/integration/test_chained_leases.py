"""Chained leases (``queue.Chain``): a record that finishes a queue's head may lease that
queue's next delivery on to the worker in the same transaction, with its message, instead of
making it due for a claim; on SQLite and PostgreSQL (the storage does both; the worker asks
for it on SQLite only: ``Worker._chain``)."""

from __future__ import annotations

import dataclasses

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, flow, queue, tamper
from consent_relay.storage.queue import Chain, Claimed, Result
from tests.queues import LEASE_MS, NOW
from tests.queues import clocks as _clocks
from tests.queues import queued as _queues
from tests.queues import result_of as _result


async def _claim(ctx: Context, now: int, lease: str = "first") -> list[Claimed]:
    async with ctx.store.write() as tx:
        return await queue.claim(tx, limit=100, now_ms=now, lease=lease, lease_ms=LEASE_MS)


async def _record(
    ctx: Context, results: list[Result], now: int, chain: Chain | None
) -> tuple[list[Result], list[Claimed]]:
    chained: list[Claimed] = []
    async with ctx.store.write() as tx:
        kept = await queue.record(tx, results, now_ms=now, now=NOW, chain=chain, chained=chained)
    return kept, chained


def _chain(now: int, limit: int = 100, excluded: tuple[str, ...] = ()) -> Chain:
    return Chain(lease="next", until_ms=now + LEASE_MS, limit=limit, excluded=excluded)


async def test_a_finished_head_leases_its_next_delivery_on_with_its_message(
    ctx: Context,
) -> None:
    now = await _queues(ctx, {"ann": 3, "bob": 1})
    heads = await _claim(ctx, now)
    assert sorted((c.user_id, c.seq) for c in heads) == [("ann", 1), ("bob", 1)]
    kept, chained = await _record(ctx, [_result(c) for c in heads], now, _chain(now))
    assert len(kept) == 2
    # ann's next is leased on, with its message; bob's queue is empty: nothing to chain
    assert [(c.user_id, c.seq, c.lease) for c in chained] == [("ann", 2, "next")]
    assert chained[0].message == {
        "type": "user.updated", "regulation": "none", "parameters": '{"n": 1}'
    }  # fmt: skip
    assert chained[0].message_id == "msg_wh_1_ann_1"
    clocks = await _clocks(ctx)
    assert clocks[("ann", 2)] == (now + LEASE_MS, "next", "pending")
    assert clocks[("ann", 3)] == (None, None, "pending")
    assert await _claim(ctx, now, "other") == []  # leased: no claim takes it
    # The chained delivery records like a claimed one, and chains the one after it.
    kept, again = await _record(ctx, [_result(chained[0])], now, _chain(now))
    assert [r.claimed.seq for r in kept] == [2]
    assert [(c.user_id, c.seq) for c in again] == [("ann", 3)]


async def test_without_a_chain_the_next_delivery_is_made_due(ctx: Context) -> None:
    now = await _queues(ctx, {"ann": 2})
    [head] = await _claim(ctx, now)
    _kept, chained = await _record(ctx, [_result(head)], now + 5, None)
    assert chained == []
    assert (await _clocks(ctx))[("ann", 2)] == (now + 5, None, "pending")


async def test_the_limit_bounds_what_is_chained_and_the_rest_is_made_due(ctx: Context) -> None:
    now = await _queues(ctx, {f"u{n}": 2 for n in range(5)})
    heads = await _claim(ctx, now)
    _kept, chained = await _record(ctx, [_result(c) for c in heads], now, _chain(now, limit=2))
    assert len(chained) == 2
    clocks = await _clocks(ctx)
    seconds = [clocks[(f"u{n}", 2)] for n in range(5)]
    assert sorted(lease or "" for _due, lease, _s in seconds) == ["", "", "", "next", "next"]
    assert all(due == now for due, lease, _s in seconds if lease is None)  # due at once


@pytest.mark.parametrize("why", ["retry", "dead", "excluded", "disabled", "paused",
                                 "rate-limited", "paused-by-this-batch"])  # fmt: skip
async def test_nothing_is_chained_where_a_claim_would_not_take_it(ctx: Context, why: str) -> None:
    now = await _queues(ctx, {"ann": 2})
    [head] = await _claim(ctx, now)
    result = _result(head)
    chain = _chain(now)
    if why == "retry":
        result = _result(head, "pending", due_ms=now + 1000)
    elif why == "dead":  # a dead head leaves its queue too: the next may be chained
        result = _result(head, "dead")
    elif why == "excluded":
        chain = _chain(now, excluded=("wh_1",))
    elif why == "paused-by-this-batch":
        result = _result(head, pause_until_ms=now + 60_000)
    else:
        async with ctx.store.write() as tx:
            if why == "disabled":
                await flow.disable(tx, [("wh_1", "test")], NOW)
            elif why == "paused":
                await flow.pause(tx, [("wh_1", now + 60_000, "test")])
            else:
                [hook] = await tx.list_all_webhooks()
                await tx.update_webhook(dataclasses.replace(hook, rate_limit=10.0))
    _kept, chained = await _record(ctx, [result], now, chain)
    if why == "dead":
        assert [(c.user_id, c.seq) for c in chained] == [("ann", 2)]
        return
    assert chained == []
    clocks = await _clocks(ctx)
    if why == "retry":
        assert clocks[("ann", 1)] == (now + 1000, None, "pending")
    else:
        assert clocks[("ann", 2)] == (now, None, "pending")


async def test_a_batch_tried_in_halves_chains_only_what_committed(ctx: Context) -> None:
    """The database refuses one result's attempt: the batch is tried in halves, the bad
    result is recorded alone (and chains nothing), and what the committed halves chained is
    leased and returned; nothing a rolled-back try chained is."""
    now = await _queues(ctx, {f"u{n}": 2 for n in range(4)})
    heads = sorted(await _claim(ctx, now), key=lambda c: c.user_id)
    bad = heads[1]
    results = [_result(c, response_body="poison" if c is bad else "fine") for c in heads]
    async with ctx.store.write() as tx:
        await tamper.refuse_inserts(tx, "attempts", "response_body", "poison")
    try:
        recorded = await batches.record(ctx.store, results, now_ms=now, now=NOW, chain=_chain(now))
    finally:
        async with ctx.store.write() as tx:  # (the PostgreSQL test database outlives the test)
            await tamper.allow_inserts(tx, "attempts")
    assert {r.claimed.user_id for r in recorded.kept} == {c.user_id for c in heads}
    assert [r.claimed.user_id for r in recorded.noted] == [bad.user_id]
    others = {c.user_id for c in heads if c is not bad}
    assert sorted((c.user_id, c.seq) for c in recorded.chained) == sorted(
        (user, 2) for user in others
    )
    clocks = await _clocks(ctx)
    for user in others:
        assert clocks[(user, 2)] == (now + LEASE_MS, "next", "pending")
    assert clocks[(bad.user_id, 2)] == (now, None, "pending")  # made due, not chained
