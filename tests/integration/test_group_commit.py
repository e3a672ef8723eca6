"""Group commit of consent events (services/ingest.py): concurrent requests share one
transaction, yet each gets exactly what it would have got alone, and one bad request never
fails its neighbours."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from consent_relay import crypto, errors
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, OrganizationIn, WebhookIn
from consent_relay.services import events as event_service
from consent_relay.services import ingest, orgs, webhooks
from consent_relay.services import users as user_service
from consent_relay.storage import inspect, write_batch
from consent_relay.storage.records import EventRecord
from consent_relay.storage.store import Store
from tests.e2e.helpers import read

JSON = dict[str, Any]


def event(ouid: str, purpose: str, enabled: bool, **extra: Any) -> EventIn:
    return EventIn.model_validate(
        {
            "user": {"organization_user_id": ouid},
            "consents": {"purposes": [{"id": purpose, "enabled": enabled}]},
            **extra,
        }
    )


async def setup_org(ctx: Context, org_id: str) -> None:
    await orgs.create_organization(ctx, OrganizationIn(id=org_id, name=org_id))
    await webhooks.create_webhook(
        ctx, org_id, WebhookIn.model_validate({"url": "http://127.0.0.1:9/all"})
    )
    await webhooks.create_webhook(
        ctx,
        org_id,
        WebhookIn.model_validate({"url": "http://127.0.0.1:9/u", "event_types": ["user.updated"]}),
    )


async def outbox_of(ctx: Context, org_id: str) -> list[tuple[str, str, int, Any]]:
    """Per (webhook URL, user's ouid): the message types and the user versions they carry,
    in queue order: what the receivers will see."""
    found = await read(ctx, inspect.queued_messages, org_id)
    return [(q["url"], q["organization_user_id"], q["seq"], q["type"]) for q in found]


async def users_of(ctx: Context, org_id: str) -> list[JSON]:
    page = await user_service.list_users(ctx, org_id, limit=1000)
    return sorted(
        (
            {k: v for k, v in user.items() if k not in ("id", "organization_id", "created_at")}
            | {"updated_at": None}
            for user in page["data"]
        ),
        key=lambda user: str(user["organization_user_id"]),
    )


def story(count: int, users: int) -> list[EventIn]:
    """Events for several users, interleaved, each user's purpose flipping back and forth
    and sometimes staying the same (an event that changes nothing)."""
    return [
        event(f"user-{n % users}", "p1", (n // users) % 3 != 1, metadata={"n": n})
        for n in range(count)
    ]


async def test_concurrent_events_come_out_as_if_written_one_by_one(ctx: Context) -> None:
    await setup_org(ctx, "together")
    await setup_org(ctx, "alone")
    events = story(60, 4)
    ingest.writer(ctx).concurrency = 3  # batches overlap (PostgreSQL's default; SQLite too)

    created = await asyncio.gather(
        *(event_service.create_event(ctx, "together", e) for e in events)
    )
    batches = ingest.writer(ctx).batches
    for e in events:
        await event_service.create_event(ctx, "alone", e)

    assert len(created) == 60
    assert batches < 60  # they did share transactions
    assert await outbox_of(ctx, "together") == await outbox_of(ctx, "alone")
    assert await users_of(ctx, "together") == await users_of(ctx, "alone")
    found = await event_service.list_events(ctx, "together", limit=1000)
    assert [e["metadata"]["n"] for e in found["data"]] == list(range(60))


async def test_an_old_event_in_a_batch_refolds_the_user_as_alone(ctx: Context) -> None:
    await setup_org(ctx, "together")
    await setup_org(ctx, "alone")
    first = event("jane", "p1", True, created_at="2026-06-01T00:00:00Z")
    batch = [
        event("jane", "p2", True),
        event("jane", "p1", False, created_at="2026-01-01T00:00:00Z"),  # sorts before `first`
        event("jane", "p2", False),
        event("john", "p1", True),
    ]
    for org_id in ("together", "alone"):
        await event_service.create_event(ctx, org_id, first)
    await asyncio.gather(*(event_service.create_event(ctx, "together", e) for e in batch))
    for e in batch:
        await event_service.create_event(ctx, "alone", e)

    assert await outbox_of(ctx, "together") == await outbox_of(ctx, "alone")
    assert await users_of(ctx, "together") == await users_of(ctx, "alone")


async def test_a_refused_request_leaves_its_neighbours_alone(ctx: Context) -> None:
    await setup_org(ctx, "acme")
    await event_service.create_event(ctx, "acme", event("jane", "p1", True, id="taken"))
    requests = [event(f"u{n}", "p1", True, id=f"e{n}") for n in range(10)]
    requests[3] = event("john", "p1", True, id="taken")  # an id the organization has
    requests[6] = event("mary", "p1", True, id="e1")  # an id an earlier request takes

    results = await asyncio.gather(
        *(event_service.create_event(ctx, "acme", e) for e in requests), return_exceptions=True
    )

    refused = [n for n, r in enumerate(results) if isinstance(r, errors.Conflict)]
    assert refused == [3, 6]
    assert all(isinstance(r, dict) for n, r in enumerate(results) if n not in refused)
    stored = await event_service.list_events(ctx, "acme", limit=100)
    assert sorted(e["id"] for e in stored["data"]) == sorted(
        ["taken", *(f"e{n}" for n in range(10) if n not in (3, 6))]
    )
    users = await user_service.list_users(ctx, "acme", limit=100)
    assert "john" not in {u["organization_user_id"] for u in users["data"]}
    assert "mary" not in {u["organization_user_id"] for u in users["data"]}


async def test_a_request_the_database_refuses_fails_alone(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the batch's transaction fails, each request is written again alone, so only the
    one at fault fails."""
    await setup_org(ctx, "acme")
    real_write = write_batch.write

    async def write_refusing_poison(tx: Any, **rows: Any) -> Any:
        new: Sequence[EventRecord] = rows["new_events"]
        if any(e.id == "poison" for e in new):
            raise RuntimeError("the database refuses this row")
        return await real_write(tx, **rows)

    monkeypatch.setattr(write_batch, "write", write_refusing_poison)
    requests = [event(f"u{n}", "p1", True, id=f"e{n}") for n in range(8)]
    requests[5] = event("u5", "p1", True, id="poison")

    results = await asyncio.gather(
        *(event_service.create_event(ctx, "acme", e) for e in requests), return_exceptions=True
    )

    assert [n for n, r in enumerate(results) if isinstance(r, BaseException)] == [5]
    assert isinstance(results[5], RuntimeError)
    stored = await event_service.list_events(ctx, "acme", limit=100)
    assert sorted(e["id"] for e in stored["data"]) == sorted(f"e{n}" for n in range(8) if n != 5)
    found = await outbox_of(ctx, "acme")
    assert {ouid for _url, ouid, _seq, _type in found} == {f"u{n}" for n in range(8) if n != 5}


async def test_two_processes_creating_the_same_user_end_with_one(
    ctx: Context, settings: Any
) -> None:
    """A second store on the same database stands for another API process: both create
    the same new user at once; the loser's batch runs again and finds the user."""
    await setup_org(ctx, "acme")
    other = Context(
        settings=settings,
        store=Store(settings.resolved_database_url, pool_size=5),
        box=crypto.SecretBox([settings.secret_key]),
    )
    try:
        results = await asyncio.gather(
            *(
                event_service.create_event(c, "acme", event("jane", f"p{n}", True))
                for n in range(20)
                for c in (ctx, other)
            )
        )
    finally:
        await other.store.close()
    assert len({r["user"]["id"] for r in results}) == 1
    users = await user_service.list_users(ctx, "acme", limit=10)
    assert len(users["data"]) == 1
    assert len(users["data"][0]["consents"]["purposes"]) == 20


async def test_a_request_arriving_as_the_writer_finishes_is_written(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that comes in after the writer found nothing more waiting, but before its
    task's done callback ran, still gets a writer: it once saw the finishing one counted,
    started none and waited for ever (one writer at a time, as on SQLite)."""
    writer = ingest.EventWriter(ctx, concurrency=1)
    late: list[asyncio.Task[JSON]] = []

    async def write(_ctx: Context, requests: Sequence[Any]) -> tuple[list[Any], int]:
        if not late:  # its first step is queued before this runner's end, its callback after
            late.append(asyncio.create_task(writer.create("acme", event("late", "p", True))))
        return [{"id": r.event_id} for r in requests], 0

    monkeypatch.setattr(ingest, "_write", write)
    first = await writer.create("acme", event("first", "p", True))
    assert first["id"]
    second = await asyncio.wait_for(late[0], timeout=10)
    assert second["id"]
    assert second["id"] != first["id"]
