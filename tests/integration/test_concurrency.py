"""Concurrent writers for the same new user: one user, one user.created, every event kept."""

from __future__ import annotations

import asyncio

from consent_relay.runtime import Context
from consent_relay.schemas import EventIn
from consent_relay.services import events, users
from consent_relay.storage import inspect


async def test_simultaneous_first_events_create_the_user_once(
    ctx: Context, org: tuple[str, str]
) -> None:
    data = EventIn.model_validate(
        {
            "user": {"organization_user_id": "racer@example.com"},
            "consents": {"purposes": [{"id": "analytics", "enabled": True}]},
        }
    )
    created = await asyncio.gather(*(events.create_event(ctx, org[0], data) for _ in range(10)))
    assert len({event["user"]["id"] for event in created}) == 1
    page = await users.list_users(ctx, org[0], organization_user_id="racer@example.com")
    assert len(page["data"]) == 1
    async with ctx.store.read() as tx:
        kinds = [row["type"] for row in await inspect.rows(tx, "messages")]
    assert kinds.count("user.created") == 1
    assert kinds.count("event.created") == 10
