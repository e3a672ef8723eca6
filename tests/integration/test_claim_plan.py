"""The claim walks the due-heads index whatever the history holds.

Left to itself, SQLite's planner walked every delivery of the webhook (delivered and dead
ones included) and sorted them, so each claim took time in proportion to the history; these
tests read the plans after a history of delivered deliveries, with and without statistics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from consent_relay.runtime import Context
from consent_relay.storage import queue

PARAMS: dict[str, Any] = {
    "now": 10**13,
    "limit": 100,
    "lease": "l",
    "until": 10**13,
    "excluded": "[]",
}


async def _history(ctx: Context, delivered: int, due: int, *, analyze: bool) -> None:
    """``delivered`` finished deliveries and ``due`` due heads, all on one enabled webhook."""
    async with ctx.store.write() as tx:
        await tx.conn.execute(
            text(
                "INSERT INTO webhooks (id, organization_id, url, enabled, flatten, headers,"
                " event_types, regulations, signing_secret, created_at, updated_at)"
                " SELECT 'wh_1', 'acme', 'http://127.0.0.1:9/', true, false, '{}', '[]', '[]',"
                " 'x', 'now', 'now'"
            )
        )
        items = [("acme", "wh_1", f"msg_{n}", f"u{n}") for n in range(delivered + due)]
        await queue.append(tx, items, 0, "2026-01-01T00:00:00.000Z")
        await tx.conn.execute(
            text(
                "UPDATE deliveries SET status = 'delivered', due_ms = NULL"
                " WHERE pk IN (SELECT pk FROM deliveries ORDER BY pk LIMIT :n)"
            ),
            {"n": delivered},
        )
        if analyze:
            await tx.conn.execute(text("ANALYZE"))


@pytest.mark.parametrize("analyze", [False, True], ids=["no-statistics", "statistics"])
async def test_the_claim_walks_the_due_index(ctx: Context, analyze: bool) -> None:
    await _history(ctx, delivered=3000, due=50, analyze=analyze)
    sql = queue.claim_sql(ctx.store.engine.dialect.name)
    async with ctx.store.read() as tx:  # EXPLAIN without ANALYZE runs nothing
        if ctx.store.is_sqlite:
            rows = (await tx.conn.execute(text("EXPLAIN QUERY PLAN " + sql), PARAMS)).all()
            plan = "\n".join(str(row[-1]) for row in rows)
            assert "USING INDEX ix_deliveries_due" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        else:
            row = (await tx.conn.execute(text("EXPLAIN (FORMAT JSON) " + sql), PARAMS)).one()
            plan = json.dumps(row[0])
            # Without statistics PostgreSQL may fetch the due heads by bitmap and sort them:
            # work in proportion to what is due, not to the history, which it never reads.
            assert '"Index Name": "ix_deliveries_due"' in plan, plan
            assert "ix_deliveries_webhook_status" not in plan, plan
            assert '"Seq Scan"' not in plan, plan
