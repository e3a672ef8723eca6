"""The write path's batch statements (storage/write_batch.py): each delivery takes its place
at the back of its (webhook, user) queue, the first of an empty queue due at once and the
others waiting, however the batches fall; the same rule as ``queue_append.append``."""

from __future__ import annotations

import asyncio
from typing import Any

from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, OrganizationIn, WebhookIn
from consent_relay.services import events, orgs, webhooks
from consent_relay.storage import inspect, write_batch


def _event(ouid: str, n: int) -> EventIn:
    return EventIn.model_validate(
        {
            "user": {"organization_user_id": ouid},
            "consents": {"purposes": [{"id": f"p{n}", "enabled": True}]},
        }
    )


async def _queues(ctx: Context) -> dict[tuple[str, str], list[dict[str, Any]]]:
    async with ctx.store.read() as tx:
        found = await inspect.rows(tx, "deliveries")
    by_queue: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in found:
        by_queue.setdefault((row["webhook_id"], row["user_id"]), []).append(row)
    return {key: sorted(rows, key=lambda r: r["seq"]) for key, rows in by_queue.items()}


async def test_each_queue_numbers_its_deliveries_in_order_across_batches(ctx: Context) -> None:
    await orgs.create_organization(ctx, OrganizationIn(id="acme", name="acme"))
    for n in range(2):
        hook = WebhookIn.model_validate({"url": f"http://127.0.0.1:9/in{n}"})
        await webhooks.create_webhook(ctx, "acme", hook)
    # Concurrent events land in shared batches; then more, for the same users, in others.
    for round_ in range(3):
        await asyncio.gather(
            *(
                events.create_event(ctx, "acme", _event(f"user{u}", round_ * 10 + k))
                for u in range(4)
                for k in range(3)
            )
        )

    queues = await _queues(ctx)
    assert len(queues) == 2 * 4  # two webhooks x four users
    for rows in queues.values():
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        assert rows[0]["due_ms"] is not None  # the head is due
        assert all(r["due_ms"] is None for r in rows[1:])  # the others wait their turn
        assert all(r["status"] == "pending" and r["attempt_count"] == 0 for r in rows)
        assert all(r["id"].startswith("dlv_") for r in rows)
    async with ctx.store.read() as tx:
        heads = await inspect.rows(tx, "delivery_queues")
    for head in heads:
        rows = queues[(head["webhook_id"], head["user_id"])]
        assert head["last_seq"] == len(rows)
        assert head["pending"] == len(rows)


async def test_sqlite_reads_each_named_user_and_event_through_its_unique_index(
    ctx: Context,
) -> None:
    """The batch's read must not walk the organization's users (it did, with
    ``id IN (...) OR organization_user_id IN (...)``: a scan a batch)."""
    if not ctx.store.is_sqlite:
        return
    async with ctx.store.write() as tx:
        plans = await write_batch.sqlite_read_plans(tx)
    touching = [p for p in plans if " users " in f"{p} " or " events " in f"{p} "]
    assert len(touching) == 3, plans  # users by id, users by organization_user_id, events
    for plan in touching:
        assert plan.startswith("SEARCH"), plans
        assert "organization_id=? AND " in plan, plans
