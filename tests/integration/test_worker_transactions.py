"""The worker's claim and record go around ``write()`` on both databases: on a SQLite file
each is one transaction in one hop to SQLite's thread (``Store.sqlite_transaction``,
test_sqlite_transaction.py), on PostgreSQL on the raw driver's pool of their own
(``Store.pg_transaction``, test_pg_transaction.py). A batch that pauses or disables its
webhook, and the rate-limited share of a claim, still go through ``write()``."""

from __future__ import annotations

import dataclasses

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, flow, inspect
from consent_relay.storage.queue import Claimed
from tests.queues import LEASE_MS, NOW, clocks, counting_transactions, queued, result_of


async def _claim(ctx: Context, now: int, lease: str = "w1") -> list[Claimed]:
    return await batches.claim(ctx.store, limit=100, now_ms=now, lease=lease, lease_ms=LEASE_MS)


async def test_a_plain_batch_is_claimed_and_recorded_in_one_transaction_each(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = await queued(ctx, {"ann": 2, "bob": 2})
    with counting_transactions(ctx.store, monkeypatch) as counts:
        heads = await _claim(ctx, now)
        recorded = await batches.record(
            ctx.store, [result_of(c) for c in heads], now_ms=now, now=NOW
        )
    assert counts == {"write": 0, "one hop": 2}
    assert sorted(r.claimed.user_id for r in recorded.kept) == ["ann", "bob"]
    assert await clocks(ctx) == {  # the heads delivered, the next ones due at once
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
    """A pause (Retry-After) is written with the record that asks for it, in one
    transaction: that batch takes ``write()``, where the pause's statements are."""
    now = await queued(ctx, {"ann": 1, "bob": 1})
    heads = await _claim(ctx, now)
    results = [result_of(heads[0]), result_of(heads[1], pause_until_ms=now + 60_000)]
    with counting_transactions(ctx.store, monkeypatch) as counts:
        recorded = await batches.record(ctx.store, results, now_ms=now, now=NOW)
    assert counts == {"write": 1, "one hop": 0}
    assert len(recorded.kept) == 2
    async with ctx.store.read() as tx:
        assert await flow.paused_until(tx, ["wh_1"], now) == {"wh_1": now + 60_000}


async def test_a_short_claim_takes_rate_limited_heads_in_a_second_transaction(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queued(ctx, {"ann": 1, "bob": 1})
    now = await queued(ctx, {f"u{n}": 1 for n in range(8)}, hooks=("wh_limited",))
    async with ctx.store.write() as tx:
        hook = next(h for h in await tx.list_all_webhooks() if h.id == "wh_limited")
        await tx.update_webhook(dataclasses.replace(hook, rate_limit=12.0))
        await flow.ensure_bucket(tx, "wh_limited", now)
    assert flow.refill(0, 0, now, 12.0) == 3  # a full bucket: three tokens
    with counting_transactions(ctx.store, monkeypatch) as counts:
        claimed = await _claim(ctx, now)
    assert counts == {"write": 1, "one hop": 1}
    by_hook: dict[str, int] = {}
    for c in claimed:
        by_hook[c.webhook_id] = by_hook.get(c.webhook_id, 0) + 1
        assert c.message is not None
    assert by_hook == {"wh_1": 2, "wh_limited": 3}
