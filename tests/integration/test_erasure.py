"""Erasure of a deleted user's personal data (README, "Privacy"), on SQLite and PostgreSQL:
payloads, attempts' texts, the SQLite files; pending deliveries still go out; dead letters
keep their payload for the grace period only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from consent_relay.runtime import Context
from consent_relay.services import privacy
from consent_relay.storage import databases, inspect, tamper
from tests.e2e.helpers import eventually, get_json, post_event, read
from tests.receiver import Received, Receiver, status_sequence
from tests.workers import make_webhook, running

EMAIL = "jane.erasable@example.com"
VALUE = "zebraquartz7781"  # a distinctive preference value


def jane_event(enabled: bool = True) -> dict[str, Any]:
    return {
        "user": {"organization_user_id": EMAIL},
        "consents": {
            "purposes": [{"id": "news", "enabled": enabled, "values": {"topic": {"value": VALUE}}}]
        },
    }


def echo(item: Received, _count: int) -> web.StreamResponse:
    """A receiver that echoes the body back: the attempt's stored response holds it."""
    return web.Response(status=200, body=item.body)


async def messages_of(ctx: Context, user_id: str) -> list[dict[str, Any]]:
    return await read(ctx, inspect.rows, "messages", user_id=user_id)


async def attempt_texts(ctx: Context, user_id: str) -> list[tuple[str | None, str | None]]:
    """The response body and request headers of each attempt to reach the user."""
    found = await read(ctx, inspect.attempts_of, user_id=user_id)
    return [(a["response_body"], a["request_headers"]) for a in found]


def sqlite_bytes(ctx: Context) -> bytes:
    path = databases.sqlite_path(ctx.store.url)
    found = b""
    for name in (path, Path(f"{path}-wal")):
        if name.exists():
            found += name.read_bytes()
    return found


async def delivered_count(ctx: Context, user_id: str) -> int:
    return await read(ctx, inspect.count, "deliveries", user_id=user_id, status="delivered")


async def test_deleting_a_user_erases_their_personal_data_everywhere(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    receiver.behaviours["/crm"] = echo
    await make_webhook(api, receiver.url("/crm"))
    created = await post_event(api, jane_event())
    jane = created["user"]["id"]
    async with running(ctx):
        await receiver.wait_for(2)
        await eventually(
            lambda: _at_least(delivered_count(ctx, jane), 2), within=20, what="delivered"
        )
    if ctx.store.is_sqlite:
        assert EMAIL.encode() in sqlite_bytes(ctx)  # the scan would see it
    assert any(body for body, _ in await attempt_texts(ctx, jane))
    delivery_id = (await read(ctx, inspect.rows, "deliveries", user_id=jane))[0]["id"]

    response = await api.delete(f"/v1/consents/users/{jane}")
    assert response.status_code == 204

    kept = await messages_of(ctx, jane)
    assert [(m["type"], m["purge_reason"]) for m in kept] == [
        ("event.created", "erased"),
        ("user.created", "erased"),
        ("user.deleted", None),  # pending: goes out first
    ]
    assert all(m["parameters"] is None for m in kept[:2])
    assert all(body is None and headers is None for body, headers in await attempt_texts(ctx, jane))
    shown = await get_json(api, f"/v1/deliveries/{delivery_id}")
    assert shown["message"]["parameters"] is None
    assert shown["message"]["purged"]["reason"] == "payload erased"
    assert EMAIL not in str(shown)
    assert VALUE not in str(shown)

    async with running(ctx):
        await receiver.wait_for(3)
        await eventually(
            lambda: _at_least(delivered_count(ctx, jane), 3), within=20, what="user.deleted"
        )
    assert receiver.received[-1].json["type"] == "user.deleted"
    assert EMAIL in receiver.received[-1].body.decode()  # the receiver learns whom to delete
    state = privacy.PurgeState()
    done = await privacy.purge_once(ctx, state)
    assert done["erased"] == 1
    assert [m["purge_reason"] for m in await messages_of(ctx, jane)] == ["erased"] * 3
    assert all(body is None and headers is None for body, headers in await attempt_texts(ctx, jane))
    assert await read(ctx, inspect.erasure_settled_at, jane)
    if ctx.store.is_sqlite:
        files = sqlite_bytes(ctx)
        assert EMAIL.encode() not in files
        assert VALUE.encode() not in files
    # What remains is pseudonymous, and the ledger still tells who was told what.
    ledger = await get_json(api, "/v1/ledger", user_id=jane)
    assert [e["type"] for e in ledger["data"]] == ["event.created", "user.created", "user.deleted"]


async def _at_least(count: Any, wanted: int) -> bool:
    return int(await count) >= wanted


async def test_pending_deliveries_of_an_erased_user_still_go_out_whole(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    await make_webhook(api, receiver.url("/crm"))
    created = await post_event(api, jane_event())
    jane = created["user"]["id"]
    await post_event(api, jane_event(False))
    response = await api.delete(f"/v1/consents/users/{jane}")  # before any delivery
    assert response.status_code == 204
    assert all(m["purge_reason"] is None for m in await messages_of(ctx, jane))
    assert await privacy.purge_once(ctx, privacy.PurgeState()) == {"erased": 0, "expired": 0}

    async with running(ctx):
        await receiver.wait_for(5)
        await eventually(
            lambda: _at_least(delivered_count(ctx, jane), 5), within=20, what="delivered"
        )
    types = [r.json["type"] for r in receiver.received]
    assert types == ["event.created", "user.created", "event.created", "user.updated",
                     "user.deleted"]  # fmt: skip
    assert VALUE in receiver.received[0].body.decode()  # sent whole, not erased too early
    await privacy.purge_once(ctx, privacy.PurgeState())
    assert [m["purge_reason"] for m in await messages_of(ctx, jane)] == ["erased"] * 5


async def test_dead_letters_of_an_erased_user_keep_their_payload_for_the_grace_only(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    ctx.settings.erasure_grace = 1.0
    receiver.behaviours["/dead"] = status_sequence(*([500] * 100))
    hook = await make_webhook(api, receiver.url("/dead"), event_types=["user.created"])
    created = await post_event(api, jane_event())
    jane = created["user"]["id"]

    async def dead() -> bool:
        return await read(ctx, inspect.count, "deliveries", status="dead") == 1

    async with running(ctx):
        await eventually(dead, within=20, what="a dead letter")
    letter = (await read(ctx, inspect.rows, "deliveries"))[0]
    response = await api.delete(f"/v1/consents/users/{jane}")
    assert response.status_code == 204
    kept = {m["type"]: m for m in await messages_of(ctx, jane)}
    assert kept["user.created"]["parameters"] is not None  # the dead letter needs it
    assert kept["event.created"]["purge_reason"] == "erased"  # no delivery needs it

    async def purged() -> bool:
        await privacy.purge_once(ctx, privacy.PurgeState())
        found = await read(ctx, inspect.message_purge_reason, letter["message_id"])
        return bool(found == "erased")

    # Within the grace the dead letter could be replayed; after it, its payload is erased.
    assert not await purged()
    await eventually(purged, within=10, interval=0.2, what="the grace period's end")
    replay = await api.post(
        f"/v1/webhooks/{hook['id']}/dead-letters/replay", json={"delivery_ids": [letter["id"]]}
    )
    assert replay.status_code == 409, replay.text
    assert "payload erased" in replay.text
    bulk = await api.post(f"/v1/webhooks/{hook['id']}/dead-letters/replay", json={})
    assert bulk.status_code == 202
    assert bulk.json() == {"replayed": 0}
    assert await read(ctx, inspect.erasure_settled_at, jane)


async def test_deleting_an_unknown_user_is_still_404(api: httpx.AsyncClient) -> None:
    response = await api.delete("/v1/consents/users/nobody")
    assert response.status_code == 404


async def test_an_erasure_waiting_out_its_grace_does_not_hold_back_the_others(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, monkeypatch: Any
) -> None:
    """Erasures are walked in turn, one at a time here: Ann's dead letter keeps her erasure
    open for 30 days, and Bob's, later, is settled all the same."""
    monkeypatch.setattr(privacy, "ERASURES_PER_PASS", 1)
    receiver.behaviours["/dead"] = status_sequence(*([500] * 100))
    await make_webhook(api, receiver.url("/dead"), event_types=["user.created"])
    ann = await post_event(api, {"user": {"organization_user_id": "ann@example.com"}})
    bob = await post_event(api, {"user": {"organization_user_id": "bob@example.com"}})

    async def two_dead() -> bool:
        return await read(ctx, inspect.count, "deliveries", status="dead") == 2

    async with running(ctx):
        await eventually(two_dead, within=20, what="two dead letters")
    for user in (ann, bob):
        response = await api.delete(f"/v1/consents/users/{user['user']['id']}")
        assert response.status_code == 204
    async with ctx.store.write() as tx:  # Bob's dead letter went out after all
        await tamper.set_delivery_status(tx, "delivered", user_id=bob["user"]["id"])
    state = privacy.PurgeState()

    async def bob_settled() -> bool:
        await privacy.purge_once(ctx, state)
        found = await read(ctx, inspect.erasure_settled_at, bob["user"]["id"])
        return found is not None

    await eventually(bob_settled, within=10, what="Bob's erasure settled")
    assert not await read(ctx, inspect.erasure_settled_at, ann["user"]["id"])
