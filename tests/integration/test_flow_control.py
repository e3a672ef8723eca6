"""Receivers in trouble (issue 14): a 410 Gone disables the webhook, a Retry-After pauses the
whole webhook, on SQLite and PostgreSQL, with a real worker and a real receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiohttp import web

from consent_relay.runtime import Context
from consent_relay.storage import inspect
from tests.receiver import Received, Receiver
from tests.workers import make_webhook, running


async def post_event(api: httpx.AsyncClient, ouid: str, enabled: bool) -> None:
    response = await api.post(
        "/v1/consents/events",
        json={
            "user": {"organization_user_id": ouid},
            "consents": {"purposes": [{"id": "analytics", "enabled": enabled}]},
        },
    )
    assert response.status_code == 201, response.text


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    """``check()``'s first truthy value, polled until ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
    return value


async def get_hook(api: httpx.AsyncClient, webhook_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/webhooks/{webhook_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def answers(*statuses: tuple[int, dict[str, str]]) -> Callable[[Received, int], web.Response]:
    def behave(_item: Received, count: int) -> web.Response:
        status, headers = statuses[count] if count < len(statuses) else (204, {})
        return web.Response(status=status, headers=headers)

    return behave


async def test_410_disables_the_webhook_and_order_holds_on_reenable(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    receiver.behaviours["/gone"] = answers((410, {}))
    hook = await make_webhook(
        api, receiver.url("/gone"), event_types=["user.created", "user.updated"]
    )
    for n in range(3):
        await post_event(api, "jane@example.com", n % 2 == 0)
    async with running(ctx):
        await receiver.wait_for(1, "/gone")
        disabled = await eventually(lambda: _disabled(api, hook["id"]))
        assert disabled["disabled_reason"].startswith("HTTP 410 at 20")
        await post_event(api, "jane@example.com", False)  # still queued while disabled
        listed = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
        assert [d["status"] for d in listed] == ["pending"] * 4
        assert len(receiver.at("/gone")) == 1
        patched = await api.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True})
        assert patched.json()["enabled"] is True
        assert patched.json()["disabled_reason"] is None
        await receiver.wait_for(5, "/gone")
        await eventually(lambda: _all_delivered(api, hook["id"], 4))
    sent = [r.headers["webhook-id"] for r in receiver.at("/gone")]
    queued = [d["message_id"] for d in listed]
    assert sent == [queued[0], *queued]  # the 410'd message first again, then in order
    async with ctx.store.read() as tx:
        [first] = await inspect.rows(tx, "deliveries", message_id=queued[0])
    assert (first["attempt_count"], first["held_attempts"]) == (2, 1)  # the 410 used no retry


async def _disabled(api: httpx.AsyncClient, webhook_id: str) -> dict[str, Any] | None:
    hook = await get_hook(api, webhook_id)
    return None if hook["enabled"] else hook


async def _all_delivered(api: httpx.AsyncClient, webhook_id: str, count: int) -> bool:
    listed = (
        await api.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"status": "delivered"})
    ).json()["data"]
    return len(listed) == count


async def test_retry_after_pauses_every_user_of_the_webhook_only(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    arrived: dict[str, list[float]] = {"/busy": [], "/other": []}

    def timed(path: str, behaviour: Callable[[Received, int], web.Response]) -> Any:
        def behave(item: Received, count: int) -> web.Response:
            arrived[path].append(time.time())
            return behaviour(item, count)

        return behave

    receiver.behaviours["/busy"] = timed("/busy", answers((429, {"Retry-After": "2"})))
    receiver.behaviours["/other"] = timed("/other", answers())
    busy = await make_webhook(api, receiver.url("/busy"), event_types=["user.created"])
    await post_event(api, "first@example.com", True)
    async with running(ctx):
        await receiver.wait_for(1, "/busy")
        paused = await eventually(lambda: _paused(api, busy["id"]))
        await make_webhook(api, receiver.url("/other"), event_types=["user.created"])
        await post_event(api, "second@example.com", True)
        await receiver.wait_for(1, "/other")  # another webhook is not paused
        await receiver.wait_for(3, "/busy")  # the held one, then the other user's
    pause_end = arrived["/busy"][0] + 2
    assert paused["paused_until"] is not None
    assert all(at >= pause_end - 0.05 for at in arrived["/busy"][1:])
    assert arrived["/other"][0] < pause_end - 0.5
    async with ctx.store.read() as tx:
        rows = await inspect.rows(tx, "deliveries", webhook_id=busy["id"])  # in pk order
    assert [(r["attempt_count"], r["held_attempts"]) for r in rows] == [(2, 1), (1, 0)]
    assert (await get_hook(api, busy["id"]))["paused_until"] is None


async def _paused(api: httpx.AsyncClient, webhook_id: str) -> dict[str, Any] | None:
    hook = await get_hook(api, webhook_id)
    return hook if hook["paused_until"] else None


async def test_held_attempts_use_up_no_retry(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    # Two holds (Retry-After: 0 means the shortest pause, 1 s), then failures: the five
    # retries of the schedule all remain, so 2 + 6 attempts before the dead letter.
    hold = (503, {"Retry-After": "0"})
    receiver.behaviours["/h"] = answers(hold, hold, *([(500, {})] * 10))
    hook = await make_webhook(api, receiver.url("/h"), event_types=["user.created"])
    await post_event(api, "held@example.com", True)
    async with running(ctx):
        await eventually(lambda: _dead(api, hook["id"]))
    assert len(receiver.at("/h")) == 8


async def _dead(api: httpx.AsyncClient, webhook_id: str) -> bool:
    listed = (
        await api.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"status": "dead"})
    ).json()["data"]
    return bool(listed)


async def test_rate_limit_and_auto_replay_set_through_the_api(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    hook = await make_webhook(api, receiver.url("/x"))
    assert (hook["rate_limit"], hook["auto_replay"]) == (None, True)
    path = f"/v1/webhooks/{hook['id']}"
    patched = await api.patch(path, json={"rate_limit": 2.5, "auto_replay": False})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["rate_limit"], patched.json()["auto_replay"]) == (2.5, False)
    for bad in ({"rate_limit": 0}, {"rate_limit": -1}, {"rate_limit": "fast"}):
        refused = await api.patch(path, json=bad)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == "rate_limit"
    refused = await api.patch(path, json={"auto_replay": None})
    assert refused.status_code == 422, refused.text
    cleared = await api.patch(path, json={"rate_limit": None})
    assert cleared.json()["rate_limit"] is None
