"""Payload retention (README, "Privacy"), on SQLite and PostgreSQL: the workers purge
delivered messages' payloads and their attempts' texts once older than the retention; dead
letters and pending deliveries keep theirs; the API says "payload expired"."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from aiohttp import web

from consent_relay import metrics, runner
from consent_relay.runtime import Context
from consent_relay.services import privacy
from consent_relay.storage import inspect
from tests.e2e.helpers import consent_event, eventually, get_json, post_event, read
from tests.receiver import Received, Receiver, status_sequence
from tests.workers import make_webhook, running


def echo(item: Received, _count: int) -> web.StreamResponse:
    return web.Response(status=200, body=item.body)


def purged_total(reason: str) -> float:
    return float(metrics.payloads_purged.labels(reason)._value.get())


async def by_status(ctx: Context) -> dict[str, set[Any]]:
    found: dict[str, set[Any]] = {}
    for status, purge_reason in await read(ctx, inspect.statuses_and_purges):
        found.setdefault(status, set()).add(purge_reason)
    return found


async def test_the_workers_purge_delivered_payloads_after_the_retention(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    ctx.settings.payload_retention = 0.5
    receiver.behaviours["/ok"] = echo
    receiver.behaviours["/dead"] = status_sequence(*([500] * 100))
    await make_webhook(api, receiver.url("/ok"))
    await make_webhook(api, receiver.url("/dead"), event_types=["user.created"])
    await post_event(api, consent_event("ann@example.com", "news", True))
    await post_event(api, consent_event("bob@example.com", "news", True))
    before = purged_total("expired")

    async def settled() -> bool:
        found = await by_status(ctx)
        expired = await read(ctx, inspect.count, "messages", purge_reason="expired")
        return "pending" not in found and expired == 2  # the two event.created

    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(ctx, stop))  # the worker with its purge task
    try:
        await eventually(settled, within=30, interval=0.1, what="payloads expired")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    found = await by_status(ctx)
    assert found["dead"] == {None}  # dead letters keep their payload until delivered
    kept_types = await read(ctx, inspect.unpurged_messages)
    assert sorted(m["type"] for m in kept_types) == ["user.created", "user.created"]
    assert purged_total("expired") - before >= 2  # the event.created of each user at least
    expired = await read(ctx, inspect.attempts_of, purge_reason="expired")
    assert expired
    assert all(a["response_body"] is None and a["request_headers"] is None for a in expired)
    assert all(a["status_code"] == 200 for a in expired)  # outcomes stay
    kept = await read(ctx, inspect.attempts_of, delivery_status="dead")
    assert all(a["response_body"] for a in kept)

    delivered = (await read(ctx, inspect.rows, "deliveries", status="delivered"))[0]
    shown = await get_json(api, f"/v1/deliveries/{delivered['id']}")
    assert shown["message"]["parameters"] is None
    assert shown["message"]["purged"]["reason"] == "payload expired"
    assert shown["attempts"][0]["status_code"] == 200
    assert "ann@example.com" not in str(shown)
    assert "bob@example.com" not in str(shown)


async def test_young_payloads_and_pending_deliveries_are_kept(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    await make_webhook(api, receiver.url("/ok"))
    await post_event(api, consent_event("ann@example.com", "news", True))
    async with running(ctx):
        await receiver.wait_for(2)

        async def delivered() -> bool:
            return await read(ctx, inspect.count, "deliveries", status="delivered") == 2

        await eventually(delivered, within=20, what="deliveries")
    state = privacy.PurgeState()
    assert await privacy.purge_once(ctx, state) == {"erased": 0, "expired": 0}  # 30 days
    ctx.settings.payload_retention = 0.001
    await post_event(api, consent_event("ann@example.com", "news", False))  # still pending

    async def two_expired() -> bool:
        await privacy.purge_once(ctx, state)
        return await read(ctx, inspect.count, "messages", purge_reason="expired") == 2

    await eventually(two_expired, within=10, what="the delivered payloads expired")
    pending = await read(ctx, inspect.unpurged_messages)
    assert len(pending) == 2  # the new messages' deliveries are pending: kept
    assert all(m["parameters"] for m in pending)


async def test_the_purge_goes_in_small_steps(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, monkeypatch: Any
) -> None:
    """A step looks at a bounded number of unpurged messages and comes back for the rest."""
    monkeypatch.setattr(privacy, "SCAN", 3)
    for n in range(4):
        await post_event(api, consent_event(f"u{n}@example.com", "news", True))  # no webhook
    ctx.settings.payload_retention = 0.001
    state = privacy.PurgeState()
    steps: list[int] = []

    async def all_expired() -> bool:
        steps.append((await privacy.purge_once(ctx, state))["expired"])
        return len(await read(ctx, inspect.unpurged_messages)) == 0

    await eventually(all_expired, within=10, what="every payload expired")
    assert sum(steps) == 8  # event.created and user.created of each user
    assert max(steps) <= 3
