"""Recovery (issue 14): dead letters replayed automatically once their webhook delivers again,
in order per user, and never a superseded consent state; on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
from aiohttp import web

from consent_relay.runtime import Context
from consent_relay.storage import recovery
from tests.integration.test_flow_control import eventually, post_event
from tests.receiver import Received, Receiver
from tests.workers import make_webhook, running


class Switch:
    """A receiver path that fails (500) while ``down``, then answers 204."""

    def __init__(self) -> None:
        self.down = True

    def __call__(self, _item: Received, _count: int) -> web.Response:
        return web.Response(status=500 if self.down else 204)


async def deliveries_of(api: httpx.AsyncClient, webhook_id: str, **params: Any) -> list[Any]:
    response = await api.get(
        f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 1000, **params}
    )
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["data"]
    return found


async def dead_count(api: httpx.AsyncClient, webhook_id: str, count: int) -> bool:
    return len(await deliveries_of(api, webhook_id, status="dead")) == count


async def test_dead_letters_replayed_in_order_once_the_receiver_is_back(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    switch = receiver.behaviours["/r"] = Switch()
    hook = await make_webhook(api, receiver.url("/r"), event_types=["event.created"])
    for n in range(3):
        await post_event(api, "anna@example.com", n % 2 == 0)
    async with running(ctx):
        await eventually(lambda: dead_count(api, hook["id"], 3))
        dead = [d["message_id"] for d in await deliveries_of(api, hook["id"], status="dead")]
        switch.down = False
        await post_event(api, "bob@example.com", True)  # delivered: the receiver is back
        await receiver.wait_for(18 + 1 + 3, "/r")
        await eventually(lambda: _delivered(api, hook["id"], 4))
    resent = [r.headers["webhook-id"] for r in receiver.at("/r")[19:]]
    assert resent == dead  # each once, in order
    listed = await deliveries_of(api, hook["id"], status="dead")
    assert all(d["replayed_by"] for d in listed)


async def _delivered(api: httpx.AsyncClient, webhook_id: str, count: int) -> bool:
    return len(await deliveries_of(api, webhook_id, status="delivered")) == count


async def test_no_automatic_replay_when_turned_off(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    switch = receiver.behaviours["/off"] = Switch()
    hook = await make_webhook(
        api, receiver.url("/off"), event_types=["event.created"], auto_replay=False
    )
    await post_event(api, "anna@example.com", True)
    async with running(ctx):
        await eventually(lambda: dead_count(api, hook["id"], 1))
        async with ctx.store.read() as tx:
            assert await recovery.needing_replay(tx, [hook["id"]]) == []
        patched = await api.patch(f"/v1/webhooks/{hook['id']}", json={"auto_replay": True})
        assert patched.json()["auto_replay"] is True
        async with ctx.store.read() as tx:
            assert await recovery.needing_replay(tx, [hook["id"]]) == [(hook["id"], "acme")]
        switch.down = False
        await post_event(api, "carl@example.com", True)
        await eventually(lambda: _delivered(api, hook["id"], 2))
    assert len(receiver.at("/off")) == 6 + 1 + 1


async def test_superseded_state_never_replayed_but_by_force(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    switch = receiver.behaviours["/s"] = Switch()
    hook = await make_webhook(api, receiver.url("/s"), event_types=["user.created", "user.updated"])
    await post_event(api, "anna@example.com", True)  # anna's user.created: dies
    await post_event(api, "bob@example.com", True)  # bob's user.created: dies
    async with running(ctx):
        await eventually(lambda: dead_count(api, hook["id"], 2))
        dead = await deliveries_of(api, hook["id"], status="dead")
        # Anna's, found by its body: the two die side by side, in either order.
        stale = next(d for d in dead if d["message_id"] == _message_of(receiver, "/s", "anna"))
        bobs = next(d for d in dead if d is not stale)
        switch.down = False
        await post_event(api, "anna@example.com", False)  # anna's user.updated: delivered
        # Anna's newer state supersedes her dead letter; bob's is replayed automatically.
        await eventually(lambda: _delivered(api, hook["id"], 2))
        superseded = await deliveries_of(api, hook["id"], status="superseded")
        assert [d["id"] for d in superseded] == [stale["id"]]
        assert superseded[0]["replayed_by"] is None
        sent = [r.headers["webhook-id"] for r in receiver.at("/s")]
        assert sent.count(stale["message_id"]) == 6
        assert sent.count(bobs["message_id"]) == 7

        replay = f"/v1/webhooks/{hook['id']}/dead-letters/replay"
        assert (await api.post(replay, json={})).json() == {"replayed": 0}
        refused = await api.post(replay, json={"delivery_ids": [stale["id"]]})
        assert refused.status_code == 409, refused.text
        assert stale["id"] in refused.json()["detail"]
        assert "force" in refused.json()["detail"]
        forced = await api.post(replay, json={"delivery_ids": [stale["id"]], "force": True})
        assert forced.status_code == 202, forced.text
        assert forced.json() == {"replayed": 1}
        await eventually(lambda: _delivered(api, hook["id"], 3))
    sent = [r.headers["webhook-id"] for r in receiver.at("/s")]
    assert sent.count(stale["message_id"]) == 7


def _message_of(receiver: Receiver, path: str, user: str) -> str:
    """The message id of the first request at ``path`` about ``user``."""
    return next(
        r.headers["webhook-id"]
        for r in receiver.at(path)
        if f"{user}@example.com".encode() in r.body
    )
