"""Leases, shown by backdating them (storage.tamper, no sleeps), on SQLite and PostgreSQL."""

from __future__ import annotations

from consent_relay import ids
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, WebhookIn
from consent_relay.services import events, webhooks
from consent_relay.storage import inspect, queue, tamper
from consent_relay.storage.queue import Claimed, Result

LEASE_MS = 60_000


async def _one_delivery(ctx: Context, org_id: str) -> None:
    await webhooks.create_webhook(
        ctx, org_id, WebhookIn.model_validate({"url": "http://127.0.0.1:9/x"})
    )
    await events.create_event(
        ctx,
        org_id,
        EventIn.model_validate({"user": {"id": "u1"}}),
    )  # event.created + user.created: two deliveries, one queue; the first is due


async def _claim(ctx: Context, lease: str, now_ms: int) -> list[Claimed]:
    async with ctx.store.write() as tx:
        return await queue.claim(tx, limit=10, now_ms=now_ms, lease=lease, lease_ms=LEASE_MS)


def _result(item: Claimed, status: str = "delivered", code: str = "ok") -> Result:
    return Result(
        claimed=item,
        status=status,
        due_ms=None,
        outcome=code,
        attempt_id=ids.new_id("atm"),
        started_at="2026-01-01T00:00:00.000Z",
        duration_ms=5,
        status_code=204,
        response_body="",
        request_headers={},
        error=None,
    )


async def _record(ctx: Context, results: list[Result], now_ms: int) -> list[Result]:
    async with ctx.store.write() as tx:
        return await queue.record(tx, results, now_ms=now_ms, now="2026-01-01T00:00:00.000Z")


async def _expire_leases(ctx: Context) -> None:
    """What the passing of the lease's time does: due_ms comes round again."""
    async with ctx.store.write() as tx:
        await tamper.expire_leases(tx)


async def test_a_leased_delivery_is_not_claimed_twice(ctx: Context, org: tuple[str, str]) -> None:
    await _one_delivery(ctx, org[0])
    now = ctx.clock_ms()
    first = await _claim(ctx, "worker-a", now)
    assert len(first) == 1  # only the queue's head
    assert await _claim(ctx, "worker-b", now) == []


async def test_an_expired_lease_is_reclaimed(ctx: Context, org: tuple[str, str]) -> None:
    await _one_delivery(ctx, org[0])
    now = ctx.clock_ms()
    [stale] = await _claim(ctx, "worker-a", now)
    await _expire_leases(ctx)
    [fresh] = await _claim(ctx, "worker-b", now)
    assert fresh.pk == stale.pk
    assert fresh.lease == "worker-b"


async def test_a_worker_whose_lease_was_taken_cannot_record(
    ctx: Context, org: tuple[str, str]
) -> None:
    await _one_delivery(ctx, org[0])
    now = ctx.clock_ms()
    [stale] = await _claim(ctx, "worker-a", now)
    await _expire_leases(ctx)
    [fresh] = await _claim(ctx, "worker-b", now)
    # The stale worker's late result, a failure, must not overwrite the new owner's lease.
    assert await _record(ctx, [_result(stale, "pending", "E_HTTP")], now) == []
    async with ctx.store.read() as tx:
        [row] = await inspect.deliveries_with_clock(tx, pk=stale.pk)
    assert row["lease_owner"] == "worker-b"
    assert row["attempt_count"] == 0
    assert row["status"] == "pending"
    kept = await _record(ctx, [_result(fresh)], now)
    assert [k.claimed.pk for k in kept] == [fresh.pk]


async def test_a_stale_late_result_does_not_duplicate_the_attempt(
    ctx: Context, org: tuple[str, str]
) -> None:
    await _one_delivery(ctx, org[0])
    now = ctx.clock_ms()
    [stale] = await _claim(ctx, "worker-a", now)
    await _expire_leases(ctx)
    [fresh] = await _claim(ctx, "worker-b", now)
    await _record(ctx, [_result(fresh)], now)
    await _record(ctx, [_result(stale)], now)  # arrives after the new owner's
    async with ctx.store.read() as tx:
        count = await inspect.count(tx, "attempts", delivery_id=fresh.id)
        [status] = await inspect.deliveries_with_clock(tx, pk=fresh.pk)
    assert count == 1
    assert (status["status"], status["attempt_count"]) == ("delivered", 1)


async def test_an_attempt_number_already_stored_is_kept_and_the_record_goes_through(
    ctx: Context, org: tuple[str, str]
) -> None:
    """(delivery, attempt number) is unique: a record whose attempt finds that number
    already stored (no lease allows it; a guard, not a path) keeps the stored attempt and
    still records the outcome, rather than failing the batch."""
    await _one_delivery(ctx, org[0])
    now = ctx.clock_ms()
    [item] = await _claim(ctx, "worker-a", now)
    async with ctx.store.write() as tx:
        await tamper.insert_attempts(
            tx,
            [
                {
                    "id": "atm_there",
                    "delivery_id": item.id,
                    "attempt_number": 1,
                    "started_at": "2026-01-01T00:00:00.000Z",
                    "duration_ms": 1,
                    "outcome": "E_HTTP",
                }
            ],
        )
    kept = await _record(ctx, [_result(item)], now)
    async with ctx.store.read() as tx:
        stored = await inspect.rows(tx, "attempts", delivery_id=item.id)
        [row] = await inspect.deliveries_with_clock(tx, pk=item.pk)
    assert [k.claimed.pk for k in kept] == [item.pk]
    assert [(a["id"], a["outcome"]) for a in stored] == [("atm_there", "E_HTTP")]
    assert (row["status"], row["attempt_count"]) == ("delivered", 1)


async def test_finishing_the_head_makes_the_next_one_due(
    ctx: Context, org: tuple[str, str]
) -> None:
    await _one_delivery(ctx, org[0])
    now = ctx.clock_ms()
    [head] = await _claim(ctx, "worker-a", now)
    assert await _claim(ctx, "worker-a", now) == []  # the second waits its turn
    await _record(ctx, [_result(head)], now)
    [second] = await _claim(ctx, "worker-a", now)
    assert second.seq == head.seq + 1


async def test_released_leases_are_due_at_once_and_not_counted(
    ctx: Context, org: tuple[str, str]
) -> None:
    await _one_delivery(ctx, org[0])
    now = ctx.clock_ms()
    [item] = await _claim(ctx, "worker-a", now)
    async with ctx.store.write() as tx:
        await queue.release(tx, [item], now)
    [again] = await _claim(ctx, "worker-b", now)
    assert again.pk == item.pk
    assert again.attempt_count == 0
