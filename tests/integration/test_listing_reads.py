"""A webhook's deliveries by status, with no index on ``status`` (migration 0014): its
pending ones through its queues, its dead letters through their own index; neither reads the
rest of the webhook's history (here a thousand delivered ones)."""

from __future__ import annotations

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, databases, deliveries, inspect, tamper
from tests.conftest import _session_database_url
from tests.queues import LEASE_MS, NOW, queued, result_of

HISTORY = {f"h{n:03d}": 4 for n in range(250)}  # a thousand deliveries, all delivered


async def _webhook_with_history(ctx: Context) -> None:
    """``HISTORY`` delivered; cy's one delivery a dead letter; ann's three and bob's two
    pending (their heads leased: claimed, not recorded)."""
    now = await queued(ctx, {**HISTORY, "ann": 3, "bob": 2, "cy": 1})
    for _round in range(4):
        claimed = await batches.claim(
            ctx.store, limit=1000, now_ms=now, lease="w1", lease_ms=LEASE_MS
        )
        results = [
            result_of(item, "dead" if item.user_id == "cy" else "delivered")
            for item in claimed
            if item.user_id not in ("ann", "bob")
        ]
        await batches.record(ctx.store, results, now_ms=now, now=NOW)


async def test_a_webhooks_deliveries_by_status(ctx: Context) -> None:
    await _webhook_with_history(ctx)
    async with ctx.store.read() as tx:

        async def users(status: str) -> list[tuple[str, int]]:
            page = await deliveries.list_for_webhook(
                tx, "wh_1", status=status, after_pk=0, limit=100
            )
            return [(d.user_id, d.seq) for d in page]

        pending, dead = await users("pending"), await users("dead")
        delivered = await users("delivered")
        after = await deliveries.list_for_webhook(
            tx, "wh_1", status="pending", after_pk=2_000_000, limit=100
        )
    # in the order they were queued (ann's, then bob's), as every page is
    assert pending == [("ann", 1), ("ann", 2), ("ann", 3), ("bob", 1), ("bob", 2)]
    assert dead == [("cy", 1)]
    assert len(delivered) == 100
    assert {u for u, _s in delivered} <= set(HISTORY)
    assert after == []


@pytest.mark.postgres
class TestOnPostgreSQL:
    """PostgreSQL's ``EXPLAIN ANALYZE`` counts the rows a page reads."""

    @pytest.fixture
    def db_url(self) -> str:
        return _session_database_url()

    @pytest.mark.parametrize("analyze", [False, True], ids=["no-statistics", "statistics"])
    @pytest.mark.parametrize("status", ["pending", "dead"])
    async def test_a_page_by_status_does_not_read_the_history(
        self, ctx: Context, status: str, analyze: bool
    ) -> None:
        """With the statistics of this table or none: not whatever an earlier test left
        (the PostgreSQL test database outlives each test; test_claim_plan.py)."""
        await _webhook_with_history(ctx)
        async with ctx.store.write() as tx:
            if analyze:
                await databases.analyze(tx)
            else:
                await tamper.forget_statistics(
                    tx, ["deliveries", "delivery_queues", "webhooks", "messages"]
                )
        async with ctx.store.read() as tx:
            reads = await inspect.listing_reads(tx, "wh_1", status)
        assert "deliveries" not in reads, reads  # no sequential scan
        assert "ix_deliveries_webhook" not in reads, reads  # nor the webhook's history
        assert sum(reads.values()) <= 40, reads
