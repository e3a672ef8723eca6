"""The claim walks the due queues' index, and finds each head through its queue's index,
whatever the history holds.

Left to itself, SQLite's planner walked every delivery of the webhook (delivered and dead
ones included) and sorted them, so each claim took time in proportion to the history; these
tests read the plans after a history of delivered deliveries, with and without statistics.

Without statistics means a table never analyzed (``tamper.forget_statistics``), not whatever
an earlier test left: the PostgreSQL test database outlives each test, so the tests forget
(or gather) the statistics themselves and leave them gathered."""

from __future__ import annotations

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import databases, inspect, queue, tamper
from tests.plans import read_plan
from tests.rows import webhook_row


async def _history(ctx: Context, delivered: int, due: int, *, analyze: bool) -> None:
    """``delivered`` finished deliveries and ``due`` due heads, all on one enabled webhook."""
    async with ctx.store.write() as tx:
        await tamper.insert_rows(tx, "webhooks", [webhook_row()])
        items = [("acme", "wh_1", f"msg_{n}", f"u{n}") for n in range(delivered + due)]
        await queue.append(tx, items, 0, "2026-01-01T00:00:00.000Z")
        first = [d["id"] for d in await inspect.rows(tx, "deliveries")][:delivered]  # pk order
        await tamper.set_delivery_status(tx, "delivered", ids=first, clear_due=True)
        if analyze:
            await databases.analyze(tx)
        elif not ctx.store.is_sqlite:  # (a new SQLite database has none)
            await tamper.forget_statistics(
                tx, ["deliveries", "delivery_queues", "webhooks", "webhook_flow"]
            )


@pytest.mark.parametrize("analyze", [False, True], ids=["no-statistics", "statistics"])
async def test_the_claim_walks_the_due_index(ctx: Context, analyze: bool) -> None:
    await _history(ctx, delivered=3000, due=50, analyze=analyze)
    plan = await read_plan(ctx, inspect.claim_plan)
    # The due queues through their due index, each head through its queue's index: never
    # the webhook's history (ix_deliveries_webhook_status walks it), never a scan.
    if ctx.store.is_sqlite:
        assert "USING INDEX ix_delivery_queues_due" in plan, plan
        assert "USING INDEX ix_deliveries_queue" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        assert "SCAN d" not in plan, plan
    else:
        # Without statistics PostgreSQL may fetch the due queues by bitmap and sort them:
        # work in proportion to what is due, not to the history, which it never reads.
        assert '"Index Name": "ix_delivery_queues_due"' in plan, plan
        assert '"Index Name": "ix_deliveries_queue"' in plan, plan
        assert "ix_deliveries_webhook_status" not in plan, plan
        assert '"Seq Scan"' not in plan, plan
