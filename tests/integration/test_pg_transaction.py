"""On PostgreSQL the worker's claim and record go to the raw driver on a small pool of their
own (``Store.pg_transaction``), not through ``write()``: the claim as its one statement, the
record and its ledger entries in one transaction, all or nothing. A batch that pauses or
disables its webhook, and the rate-limited share of a claim, still go through ``write()``."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, flow, inspect, queue
from tests.conftest import _session_database_url
from tests.integration.test_sqlite_transaction import (
    LEASE_MS,
    NOW,
    _claim,
    _counting_writes,
    _delivered,
    _queues,
    _statuses,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url() -> str:
    """PostgreSQL only (SQLite's twin: test_sqlite_transaction.py)."""
    return _session_database_url()


async def test_the_claim_is_one_statement_that_commits(ctx: Context) -> None:
    now = await _queues(ctx, ["ann", "bob", "cy"])
    claimed, more = await ctx.store.pg_transaction(
        lambda raw: queue.claim_pg(raw, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS),
        begin=False,
    )
    assert sorted(c.user_id for c in claimed) == ["ann", "bob", "cy"]
    assert all(c.message is not None for c in claimed)
    assert more is False  # no rate-limited webhook has due heads
    assert await _claim(ctx, now, "w2") == []
    assert {key: owner for key, (_due, owner, _s) in (await _statuses(ctx)).items()} == {
        ("ann", 1): "w1",
        ("bob", 1): "w1",
        ("cy", 1): "w1",
    }


async def test_a_transaction_that_fails_leaves_nothing_behind(ctx: Context) -> None:
    now = await _queues(ctx, ["ann", "bob"])

    async def claim_then_fail(raw: Any) -> None:
        claimed, _ = await queue.claim_pg(raw, limit=100, now_ms=now, lease="w1", lease_ms=LEASE_MS)
        assert len(claimed) == 2
        raise ValueError("something after the claim went wrong")

    with pytest.raises(ValueError, match="after the claim"):
        await ctx.store.pg_transaction(claim_then_fail)
    assert {key: owner for key, (_due, owner, _s) in (await _statuses(ctx)).items()} == {
        ("ann", 1): None,
        ("bob", 1): None,
    }
    assert sorted(c.user_id for c in await _claim(ctx, now)) == ["ann", "bob"]


async def test_the_worker_claims_and_records_a_plain_batch_on_the_raw_driver(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = await _queues(ctx, ["ann", "bob"], per_user=2)
    with _counting_writes(ctx.store, monkeypatch) as counts:
        heads = await _claim(ctx, now)
        recorded = await batches.record(
            ctx.store, [_delivered(c) for c in heads], now_ms=now, now=NOW
        )
    assert counts == {"write": 0, "one hop": 2}
    assert sorted(r.claimed.user_id for r in recorded.kept) == ["ann", "bob"]
    assert await _statuses(ctx) == {
        ("ann", 1): (None, None, "delivered"),
        ("ann", 2): (now, None, "pending"),
        ("bob", 1): (None, None, "delivered"),
        ("bob", 2): (now, None, "pending"),
    }
    async with ctx.store.read() as tx:  # the ledger entries and attempts went with it
        assert await inspect.count(tx, "ledger_entries") == 2
        assert await inspect.count(tx, "attempts") == 2


async def test_a_batch_that_pauses_its_webhook_is_recorded_through_write(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = await _queues(ctx, ["ann", "bob"])
    heads = await _claim(ctx, now)
    results = [_delivered(heads[0]), _delivered(heads[1], pause_until_ms=now + 60_000)]
    with _counting_writes(ctx.store, monkeypatch) as counts:
        recorded = await batches.record(ctx.store, results, now_ms=now, now=NOW)
    assert counts == {"write": 1, "one hop": 0}
    assert len(recorded.kept) == 2
    async with ctx.store.read() as tx:
        assert await flow.paused_until(tx, ["wh_1"], now) == {"wh_1": now + 60_000}


async def test_a_short_claim_takes_rate_limited_heads_in_a_second_transaction(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _queues(ctx, ["ann", "bob"])
    now = await _queues(ctx, [f"u{n}" for n in range(8)], hook="wh_limited")
    async with ctx.store.write() as tx:
        hook = next(h for h in await tx.list_all_webhooks() if h.id == "wh_limited")
        await tx.update_webhook(dataclasses.replace(hook, rate_limit=12.0))
        await flow.ensure_bucket(tx, "wh_limited", now)
    with _counting_writes(ctx.store, monkeypatch) as counts:
        claimed = await _claim(ctx, now)
    assert counts == {"write": 1, "one hop": 1}
    by_hook: dict[str, int] = {}
    for c in claimed:
        by_hook[c.webhook_id] = by_hook.get(c.webhook_id, 0) + 1
        assert c.message is not None
    assert by_hook == {"wh_1": 2, "wh_limited": 3}
