"""Finding the dead letters a delivered message supersedes reads that queue's dead letters
only, whatever the webhook's other dead letters and whatever the statistics.

A table that has just filled with dead letters (an outage) has no statistics yet; PostgreSQL,
planning the record's lookup as a join then, read every dead letter of the webhook for each
delivered message (4 s to record a batch of 200 against 50,000). These tests read the plans
after many dead letters, with and without statistics."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import databases, inspect, queue, tamper
from tests.plans import read_plan
from tests.rows import webhook_row


async def _dead_letters(ctx: Context, count: int, *, analyze: bool) -> None:
    """``count`` dead letters on one webhook, over many users, then as many deliveries
    delivered after them in the same queues."""
    async with ctx.store.write() as tx:
        await tamper.insert_rows(tx, "webhooks", [webhook_row()])
        items = [("acme", "wh_1", f"msg_{n}", f"u{n % 500}") for n in range(count)]
        await queue.append(tx, items, 0, "2026-01-01T00:00:00.000Z")
        await tamper.set_delivery_status(tx, "dead", webhook_id="wh_1", clear_due=True)
        later = [("acme", "wh_1", f"msg_{count + n}", f"u{n % 500}") for n in range(count)]
        await queue.append(tx, later, 0, "2026-01-01T00:00:00.000Z")
        delivered = [row["id"] for row in await inspect.rows(tx, "deliveries", status="pending")]
        await tamper.set_delivery_status(tx, "delivered", ids=delivered, clear_due=True)
        if analyze:
            await databases.analyze(tx)
        elif not ctx.store.is_sqlite:  # (a new SQLite database has none)
            await tamper.forget_statistics(tx, ["deliveries"])


def _index_scans(node: dict[str, Any]) -> list[tuple[str, str]]:
    """(node type, index name) of every scan in a PostgreSQL plan."""
    found = []
    if "Index Name" in node or node.get("Node Type") == "Seq Scan":
        found.append((str(node["Node Type"]), str(node.get("Index Name", ""))))
    for child in node.get("Plans", []):
        found.extend(_index_scans(child))
    return found


@pytest.mark.parametrize("analyze", [False, True], ids=["no-statistics", "statistics"])
async def test_the_supersede_lookup_reads_the_queues_dead_letters(
    ctx: Context, analyze: bool
) -> None:
    await _dead_letters(ctx, 3000, analyze=analyze)
    plan = await read_plan(ctx, inspect.supersede_plan)
    if ctx.store.is_sqlite:
        assert "USING INDEX ix_deliveries_dead_letters" in plan, plan
        return
    scans = _index_scans(json.loads(plan)[0]["Plan"])
    lookups = [scan for scan in scans if scan[1] == "ix_deliveries_dead_letters"]
    assert lookups == [("Index Scan", "ix_deliveries_dead_letters")], scans
    assert not [scan for scan in scans if scan[0] == "Seq Scan"], scans
    assert "ix_deliveries_webhook" not in plan, plan
