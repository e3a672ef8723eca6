"""The worker against a real local receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from consent_relay.runtime import Context
from consent_relay.storage import inspect
from tests.receiver import Receiver, status_sequence
from tests.workers import make_webhook, running


async def post_event(api: httpx.AsyncClient, ouid: str, enabled: bool) -> dict[str, Any]:
    response = await api.post(
        "/v1/consents/events",
        json={
            "user": {"organization_user_id": ouid},
            "consents": {"purposes": [{"id": "analytics", "enabled": enabled}]},
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _arrivals_and_events(
    api: httpx.AsyncClient, receiver: Receiver
) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """The event ids each user's messages carried, in arrival order, and the events as the
    API lists them (creation order)."""
    seen: dict[str, list[str]] = {}
    for item in receiver.received:
        entity = item.json["parameters"]["entity"]
        seen.setdefault(entity["user"]["organization_user_id"], []).append(entity["id"])
    events = (await api.get("/v1/consents/events", params={"limit": 1000})).json()["data"]
    return seen, events


async def test_delivers_signed_messages_in_order(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    hook = await make_webhook(api, receiver.url())
    await post_event(api, "jane@example.com", True)
    await post_event(api, "jane@example.com", False)
    async with running(ctx):
        await receiver.wait_for(4)
    types = [r.json["type"] for r in receiver.received]
    assert types == ["event.created", "user.created", "event.created", "user.updated"]
    verifier = Webhook(hook["signing_secret"])
    for item in receiver.received:
        verifier.verify(item.body, item.headers)
        assert item.headers["Content-Type"] == "application/json"
        assert item.headers["User-Agent"].startswith("consent-relay/")
        assert item.headers["webhook-id"].startswith("msg_")


async def test_failing_receiver_gets_six_attempts_then_dead_letter(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    receiver.behaviours["/fail"] = status_sequence(*([500] * 10))
    await make_webhook(api, receiver.url("/fail"), event_types=["user.created"])
    await post_event(api, "joe@example.com", True)
    async with running(ctx):
        await receiver.wait_for(6)
        for _ in range(100):
            async with ctx.store.read() as tx:
                [row] = await inspect.rows(tx, "deliveries")
            if row["status"] == "dead":
                break
            await asyncio.sleep(0.05)
    assert row["status"] == "dead"
    assert len(receiver.received) == 6
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    async with ctx.store.read() as tx:
        found = await inspect.rows(tx, "attempts")
    outcomes = [a["outcome"] for a in sorted(found, key=lambda a: a["attempt_number"])]
    assert outcomes == ["E_HTTP"] * 6


@pytest.mark.parametrize("users", [3])
async def test_order_per_user_holds_across_failures(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, users: int
) -> None:
    # The first request fails twice: that user's later messages wait; others flow.
    receiver.behaviours["/o"] = status_sequence(500, 500)
    await make_webhook(api, receiver.url("/o"), event_types=["event.created"])
    for round_ in range(5):
        for user in range(users):
            await post_event(api, f"u{user}@example.com", round_ % 2 == 0)
    async with running(ctx):
        await receiver.wait_for(5 * users + 2)
    seen, events = await _arrivals_and_events(api, receiver)
    for user in range(users):
        ouid = f"u{user}@example.com"
        expected = [e["id"] for e in events if e["user"]["organization_user_id"] == ouid]
        got = list(dict.fromkeys(seen[ouid]))  # a retried message appears more than once
        assert got == expected


async def test_dead_letter_listed_with_attempts_and_replayed_with_same_webhook_id(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    receiver.behaviours["/d"] = status_sequence(*([503] * 6))
    hook = await make_webhook(api, receiver.url("/d"), event_types=["user.created"])
    await post_event(api, "dead@example.com", True)
    async with running(ctx):
        await receiver.wait_for(6)
        for _ in range(200):
            dead = (
                await api.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "dead"})
            ).json()["data"]
            if dead:
                break
            await asyncio.sleep(0.02)
        assert len(dead) == 1
        assert dead[0]["attempt_count"] == 6
        detail = (await api.get(f"/v1/deliveries/{dead[0]['id']}")).json()
        assert [a["attempt_number"] for a in detail["attempts"]] == [1, 2, 3, 4, 5, 6]
        assert all(a["status_code"] == 503 for a in detail["attempts"])
        assert detail["attempts"][0]["response_body"] == "answer 0"
        response = await api.post(f"/v1/webhooks/{hook['id']}/dead-letters/replay", json={})
        assert response.status_code == 202
        assert response.json() == {"replayed": 1}
        await receiver.wait_for(7)
        for _ in range(200):
            delivered = (
                await api.get(
                    f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "delivered"}
                )
            ).json()["data"]
            if delivered:
                break
            await asyncio.sleep(0.02)
    assert [d["replay_of"] for d in delivered] == [dead[0]["id"]]
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(ids) == 1
    again = (await api.post(f"/v1/webhooks/{hook['id']}/dead-letters/replay", json={})).json()
    assert again == {"replayed": 0}  # already replayed: "all" leaves it out


async def test_a_backlog_drains_in_order_with_chained_leases_on_sqlite(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    """A backlog (claims come back full) drained by a worker whose records lease each
    finished queue's next delivery on (``Worker._chain``, SQLite only): every message
    arrives once, each user's in order; on PostgreSQL nothing is chained."""
    await make_webhook(api, receiver.url("/b"), event_types=["event.created"])
    users, rounds = 30, 4
    for round_ in range(rounds):
        for user in range(users):
            await post_event(api, f"b{user}@example.com", round_ % 2 == 0)
    async with running(ctx, batch_size=5, concurrency=10) as worker:
        await receiver.wait_for(users * rounds)
    seen, events = await _arrivals_and_events(api, receiver)
    for user in range(users):
        ouid = f"b{user}@example.com"
        expected = [e["id"] for e in events if e["user"]["organization_user_id"] == ouid]
        assert seen[ouid] == expected  # once each, in order
    if ctx.store.is_sqlite:
        assert worker.chained > 0
    else:
        assert worker.chained == 0
    async with ctx.store.read() as tx:
        assert await inspect.count_undelivered(tx) == 0
