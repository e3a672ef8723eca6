"""PostgreSQL: the worker's prepared claim, in its generic plan, finds each head through its
queue's index (``ix_deliveries_queue``), never by walking the webhook's history.

asyncpg prepares the claim once a connection, and after its first executions PostgreSQL
may settle on a generic plan and keep it for the connection's life. With a few hundred
deliveries and no statistics (autovacuum off, as in CI and the bench), that plan found
each head through ``ix_deliveries_webhook``, the smaller index, with the user and the
sequence as a filter: a walk of the webhook's history on every claim, longer as it grew
(the latency scenario's p99 went to seconds in about one run in six). These tests read
the generic plan at the sizes where it did (150 and 200 deliveries without statistics, 60
with them, failed before the fix), and around them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import databases, inspect_driver, queue, tamper
from tests.conftest import _session_database_url
from tests.rows import webhook_row

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url() -> str:
    """PostgreSQL only: SQLite has no generic plans to settle on (its claim's plans are
    read by test_claim_plan.py)."""
    return _session_database_url()


def _lookups(node: dict[str, Any], found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(index, condition) of each index scan of ``deliveries`` in a plan."""
    if node.get("Relation Name") == "deliveries":
        found.append((str(node.get("Index Name", "(table)")), str(node.get("Index Cond", ""))))
    for child in node.get("Plans", []):
        _lookups(child, found)
    return found


@pytest.mark.parametrize("deliveries", [60, 150, 200, 600])
@pytest.mark.parametrize("analyze", [False, True], ids=["no-statistics", "statistics"])
async def test_the_prepared_claim_finds_heads_through_the_queue_index(
    ctx: Context, deliveries: int, analyze: bool
) -> None:
    async with ctx.store.write() as tx:
        await tamper.insert_rows(tx, "webhooks", [webhook_row(), webhook_row("wh_2")])
        items = [
            ("acme", f"wh_{1 + n % 2}", f"msg_{n}", f"user-00000000-0000-0000-0000-{n:012d}")
            for n in range(deliveries)
        ]
        await queue.append(tx, items, 0, "2026-01-01T00:00:00.000Z")
        if analyze:
            await databases.analyze(tx)
        else:
            await tamper.forget_statistics(
                tx, ["deliveries", "delivery_queues", "webhooks", "webhook_flow", "messages"]
            )
    plan = json.loads(await inspect_driver.generic_claim_plan(ctx.store, now_ms=10**13))
    lookups = _lookups(plan[0]["Plan"], [])
    assert [index for index, _ in lookups] == ["ix_deliveries_queue"], lookups
    # ... as an index condition on the queue's three columns, not a scan with a filter.
    condition = lookups[0][1]
    for column in ("webhook_id", "user_id", "seq"):
        assert column in condition, lookups
