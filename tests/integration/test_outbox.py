"""The outbox: which messages a change queues (docs/webhook-rules.md), and their deliveries
(docs/delivery-contract.md).

Everything is read straight from the ``messages``, ``deliveries`` and ``delivery_queues``
tables, in insertion order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest

from consent_relay.api.app import create_app
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect, queue, write_batch
from consent_relay.storage.records import MessageRecord, NewDelivery
from consent_relay.storage.store import Store
from consent_relay.storage.tx import Tx

EVENTS = "/v1/consents/events"
USERS = "/v1/consents/users"
QUIET = {"$disable_integrations": "true"}
NOW_MS = 1_767_225_600_000  # the context's clock, fixed
# Every table a change writes to (a failed change leaves each as it was).
OUTBOX_TABLES = ("events", "users", "messages", "deliveries", "delivery_queues", "profile_changes")


@pytest.fixture(autouse=True)
def fixed_clock(ctx: Context) -> None:
    ctx.clock_ms = lambda: NOW_MS


# -- reading the outbox -----------------------------------------------------------------------


async def read_messages(store: Store) -> list[dict[str, Any]]:
    async with store.read() as tx:
        rows = await inspect.rows(tx, "messages")
    return [
        {
            "id": row["id"],
            "organization_id": row["organization_id"],
            "type": row["type"],
            "regulation": row["regulation"],
            "user_id": row["user_id"],
            # None once erased: a deleted user's message no delivery needs (test_erasure.py)
            "parameters": None if row["parameters"] is None else json.loads(row["parameters"]),
        }
        for row in rows
    ]


async def read_deliveries(store: Store) -> list[dict[str, Any]]:
    async with store.read() as tx:
        return await inspect.deliveries_with_clock(tx)


async def count(store: Store, table: str) -> int:
    async with store.read() as tx:
        return await inspect.count(tx, table)


class Outbox:
    """The messages queued since the last look."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen = 0

    async def new(self) -> list[dict[str, Any]]:
        found = await read_messages(self.store)
        fresh, self.seen = found[self.seen :], len(found)
        return fresh


@pytest.fixture
def outbox(store: Store) -> Outbox:
    return Outbox(store)


def types(found: Sequence[dict[str, Any]]) -> list[str]:
    return [message["type"] for message in found]


# -- API helpers ------------------------------------------------------------------------------


def _json(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


async def call(
    api: httpx.AsyncClient,
    method: str,
    path: str,
    payload: dict[str, Any] | None = None,
    *,
    status: int,
    quiet: bool = False,
) -> dict[str, Any]:
    response = await api.request(method, path, json=payload, params=QUIET if quiet else None)
    assert response.status_code == status, response.text
    return _json(response) if response.content else {}


async def new_event(api: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    return await call(api, "POST", EVENTS, payload, status=201)


async def user_of(api: httpx.AsyncClient, user_id: str, regulation: str = "gdpr") -> dict[str, Any]:
    return await call(api, "GET", f"{USERS}/{user_id}?regulation={regulation}", status=200)


async def event_of(api: httpx.AsyncClient, event_id: str) -> dict[str, Any]:
    return await call(api, "GET", f"{EVENTS}/{event_id}", status=200)


async def webhook(api: httpx.AsyncClient, **fields: Any) -> str:
    body = {"url": "http://127.0.0.1:9/hook", **fields}
    return str((await call(api, "POST", "/v1/webhooks", body, status=201))["id"])


P1_ON = {"purposes": [{"id": "p1", "enabled": True}]}
P1_OFF = {"purposes": [{"id": "p1", "enabled": False}]}


# -- docs/webhook-rules.md, row by row --------------------------------------------------------


async def test_event_created_confirmed_new_user(api: httpx.AsyncClient, outbox: Outbox) -> None:
    event = await new_event(api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON})
    user = await user_of(api, event["user"]["id"])
    assert user["consents"]["purposes"][0]["enabled"] is True  # the event applied

    found = await outbox.new()
    assert types(found) == ["event.created", "user.created"]
    assert found[0]["parameters"] == {"entity": event}
    assert found[1]["parameters"] == {"entity": user}
    for message in found:
        assert message["regulation"] == "gdpr"
        assert message["user_id"] == user["id"]
        assert message["organization_id"] == "acme"
        assert message["id"].startswith("msg_")


async def test_event_created_confirmed_existing_user_changed(
    api: httpx.AsyncClient, outbox: Outbox
) -> None:
    first = await new_event(api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON})
    user_id = first["user"]["id"]
    before = await user_of(api, user_id)
    await outbox.new()

    event = await new_event(api, {"user": {"id": user_id}, "consents": P1_OFF})
    after = await user_of(api, user_id)
    assert after["version"] == before["version"] + 1

    found = await outbox.new()
    assert types(found) == ["event.created", "user.updated"]
    assert found[0]["parameters"] == {"entity": event}
    assert found[1]["parameters"] == {"source": event, "old_entity": before, "new_entity": after}


async def test_event_created_confirmed_existing_user_unchanged(
    api: httpx.AsyncClient, outbox: Outbox
) -> None:
    first = await new_event(api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON})
    await outbox.new()
    event = await new_event(
        api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON, "metadata": {"x": 1}}
    )
    found = await outbox.new()
    assert types(found) == ["event.created"]
    assert found[0]["parameters"] == {"entity": event}
    assert (await user_of(api, first["user"]["id"]))["version"] == 1


async def test_event_created_pending_new_user(api: httpx.AsyncClient, outbox: Outbox) -> None:
    event = await new_event(
        api,
        {
            "status": "pending_approval",
            "user": {"organization_user_id": "jane", "metadata": {"a": 1}, "country": "FR"},
            "consents": P1_ON,
        },
    )
    user = await user_of(api, event["user"]["id"])
    assert user["consents"]["purposes"] == []
    assert user["metadata"] == {}
    assert user["country"] is None

    found = await outbox.new()
    assert types(found) == ["event.created", "user.created"]
    assert found[0]["parameters"] == {"entity": event}
    assert found[0]["parameters"]["entity"]["status"] == "pending_approval"
    assert found[1]["parameters"] == {"entity": user}


async def test_event_created_pending_existing_user(api: httpx.AsyncClient, outbox: Outbox) -> None:
    await new_event(api, {"user": {"organization_user_id": "jane"}})
    await outbox.new()
    event = await new_event(
        api,
        {
            "status": "pending_approval",
            "user": {"organization_user_id": "jane", "metadata": {"a": 1}},
            "consents": P1_ON,
        },
    )
    found = await outbox.new()
    assert types(found) == ["event.created"]
    assert found[0]["parameters"] == {"entity": event}


async def test_pending_event_changed_still_pending(api: httpx.AsyncClient, outbox: Outbox) -> None:
    pending = await new_event(
        api, {"status": "pending_approval", "user": {"organization_user_id": "jane"}}
    )
    await outbox.new()
    changed = await call(api, "PATCH", f"{EVENTS}/{pending['id']}", {"consents": P1_ON}, status=200)
    assert changed["status"] == "pending_approval"
    found = await outbox.new()
    assert types(found) == ["event.created"]
    assert found[0]["parameters"] == {"entity": changed}
    assert changed == await event_of(api, pending["id"])

    # Nothing new: nothing sent.
    await call(api, "PATCH", f"{EVENTS}/{pending['id']}", {"consents": P1_ON}, status=200)
    assert await outbox.new() == []


async def test_event_confirmed(api: httpx.AsyncClient, outbox: Outbox) -> None:
    pending = await new_event(
        api,
        {
            "status": "pending_approval",
            "user": {"organization_user_id": "jane", "metadata": {"a": 1}},
            "consents": P1_ON,
        },
    )
    user_id = pending["user"]["id"]
    before = await user_of(api, user_id)
    await outbox.new()

    confirmed = await call(
        api, "PATCH", f"{EVENTS}/{pending['id']}", {"status": "confirmed"}, status=200
    )
    after = await user_of(api, user_id)
    assert after["metadata"] == {"a": 1}

    found = await outbox.new()
    assert types(found) == ["event.updated", "user.updated"]
    assert found[0]["parameters"] == {
        "source": confirmed,
        "old_entity": pending,
        "new_entity": confirmed,
    }
    assert found[1]["parameters"] == {
        "source": confirmed,
        "old_entity": before,
        "new_entity": after,
    }


async def test_event_confirmed_without_effect_on_the_user(
    api: httpx.AsyncClient, outbox: Outbox
) -> None:
    first = await new_event(api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON})
    pending = await new_event(
        api, {"status": "pending_approval", "user": {"id": first["user"]["id"]}, "consents": P1_ON}
    )
    await outbox.new()
    confirmed = await call(
        api, "PATCH", f"{EVENTS}/{pending['id']}", {"status": "confirmed"}, status=200
    )
    found = await outbox.new()
    assert types(found) == ["event.updated"]
    assert found[0]["parameters"] == {
        "source": confirmed,
        "old_entity": pending,
        "new_entity": confirmed,
    }


async def test_confirmed_event_changed(api: httpx.AsyncClient, outbox: Outbox) -> None:
    event = await new_event(api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON})
    user_id = event["user"]["id"]
    before = await user_of(api, user_id)
    await outbox.new()

    changed = await call(api, "PATCH", f"{EVENTS}/{event['id']}", {"consents": P1_OFF}, status=200)
    after = await user_of(api, user_id)
    found = await outbox.new()
    assert types(found) == ["event.updated", "user.updated"]
    assert found[0]["parameters"] == {"source": changed, "old_entity": event, "new_entity": changed}
    assert found[1]["parameters"] == {"source": changed, "old_entity": before, "new_entity": after}

    # Only the event's own metadata: the user does not change.
    relabelled = await call(
        api, "PATCH", f"{EVENTS}/{event['id']}", {"metadata": {"note": "x"}}, status=200
    )
    found = await outbox.new()
    assert types(found) == ["event.updated"]
    assert found[0]["parameters"] == {
        "source": relabelled,
        "old_entity": changed,
        "new_entity": relabelled,
    }


async def test_event_deleted(api: httpx.AsyncClient, outbox: Outbox) -> None:
    first = await new_event(api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON})
    user_id = first["user"]["id"]
    second = await new_event(api, {"user": {"id": user_id}, "consents": P1_OFF})
    before = await user_of(api, user_id)
    await outbox.new()

    await call(api, "DELETE", f"{EVENTS}/{second['id']}", status=204)
    after = await user_of(api, user_id)
    assert after["consents"]["purposes"][0]["enabled"] is True
    found = await outbox.new()
    assert types(found) == ["event.deleted", "user.updated"]
    assert found[0]["parameters"] == {"entity": second}
    assert found[1]["parameters"] == {"source": second, "old_entity": before, "new_entity": after}


async def test_event_deleted_without_effect_on_the_user(
    api: httpx.AsyncClient, outbox: Outbox
) -> None:
    first = await new_event(api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON})
    pending = await new_event(
        api, {"status": "pending_approval", "user": {"id": first["user"]["id"]}, "consents": P1_OFF}
    )
    await outbox.new()
    await call(api, "DELETE", f"{EVENTS}/{pending['id']}", status=204)
    found = await outbox.new()
    assert types(found) == ["event.deleted"]
    assert found[0]["parameters"] == {"entity": pending}


async def test_user_created_by_the_api(api: httpx.AsyncClient, outbox: Outbox) -> None:
    user = await call(
        api, "POST", USERS, {"organization_user_id": "jane", "metadata": {"a": 1}}, status=201
    )
    found = await outbox.new()
    assert types(found) == ["user.created"]
    assert found[0]["parameters"] == {"entity": user}
    assert found[0]["regulation"] == "gdpr"
    assert found[0]["user_id"] == user["id"]


async def test_user_changed_by_the_api(api: httpx.AsyncClient, outbox: Outbox) -> None:
    user = await call(api, "POST", USERS, {"organization_user_id": "jane"}, status=201)
    await outbox.new()
    changed = await call(api, "PATCH", f"{USERS}/{user['id']}", {"metadata": {"a": 1}}, status=200)
    found = await outbox.new()
    assert types(found) == ["user.updated"]
    assert found[0]["parameters"] == {"source": None, "old_entity": user, "new_entity": changed}
    assert found[0]["regulation"] == "gdpr"

    # No effective change: nothing.
    await call(api, "PATCH", f"{USERS}/{user['id']}", {"metadata": {"a": 1}}, status=200)
    await call(api, "PATCH", f"{USERS}/{user['id']}", {}, status=200)
    assert await outbox.new() == []


async def test_user_deleted(api: httpx.AsyncClient, outbox: Outbox) -> None:
    # A webhook to tell: a deleted user's message no delivery needs is erased at once
    # (test_erasure.py); this one waits for its delivery, payload and all.
    await webhook(api)
    event = await new_event(api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON})
    await new_event(api, {"user": {"organization_user_id": "jane"}, "status": "pending_approval"})
    user = await user_of(api, event["user"]["id"])
    await outbox.new()

    await call(api, "DELETE", f"{USERS}/{user['id']}", status=204)
    found = await outbox.new()
    assert types(found) == ["user.deleted"]  # its events go silently
    assert found[0]["parameters"] == {"entity": user}
    assert found[0]["regulation"] == "gdpr"


async def test_user_entity_carries_the_regulation_of_the_event(
    api: httpx.AsyncClient, outbox: Outbox
) -> None:
    first = await new_event(api, {"user": {"organization_user_id": "jane"}, "consents": P1_ON})
    user_id = first["user"]["id"]
    before = await user_of(api, user_id, "cpra")
    await outbox.new()

    event = await new_event(
        api, {"user": {"id": user_id}, "regulation": "cpra", "consents": P1_OFF}
    )
    after = await user_of(api, user_id, "cpra")
    found = await outbox.new()
    assert types(found) == ["event.created", "user.updated"]
    assert [message["regulation"] for message in found] == ["cpra", "cpra"]
    assert found[0]["parameters"] == {"entity": event}
    assert found[1]["parameters"] == {"source": event, "old_entity": before, "new_entity": after}
    assert after["consents"]["purposes"] == [
        {"id": "p1", "enabled": False, "enabled_li": None, "metadata": {}, "values": {}}
    ]

    fresh = await new_event(
        api, {"user": {"organization_user_id": "john"}, "regulation": "cpra", "consents": P1_ON}
    )
    found = await outbox.new()
    assert types(found) == ["event.created", "user.created"]
    assert found[1]["parameters"] == {"entity": await user_of(api, fresh["user"]["id"], "cpra")}


async def test_disable_integrations_queues_nothing(
    api: httpx.AsyncClient, ctx: Context, store: Store
) -> None:
    await webhook(api)
    ctx.work_queued.clear()
    event = await call(
        api, "POST", EVENTS, {"user": {"organization_user_id": "jane"}}, status=201, quiet=True
    )
    user_id = event["user"]["id"]
    pending = await call(
        api,
        "POST",
        EVENTS,
        {"user": {"id": user_id}, "status": "pending_approval", "consents": P1_ON},
        status=201,
        quiet=True,
    )
    await call(
        api, "PATCH", f"{EVENTS}/{pending['id']}", {"status": "confirmed"}, status=200, quiet=True
    )
    await call(api, "DELETE", f"{EVENTS}/{pending['id']}", status=204, quiet=True)
    other = await call(api, "POST", USERS, {"id": "u2"}, status=201, quiet=True)
    await call(api, "PATCH", f"{USERS}/{other['id']}", {"country": "FR"}, status=200, quiet=True)
    await call(api, "DELETE", f"{USERS}/{other['id']}", status=204, quiet=True)
    await call(api, "DELETE", f"{USERS}/{user_id}", status=204, quiet=True)

    assert await read_messages(store) == []
    assert await read_deliveries(store) == []
    assert await count(store, "delivery_queues") == 0
    assert not ctx.work_queued.is_set()

    # The same write without the flag queues as usual (and wakes the workers).
    await call(api, "POST", EVENTS, {"user": {"organization_user_id": "jane"}}, status=201)
    assert len(await read_messages(store)) == 2
    assert len(await read_deliveries(store)) == 2
    assert ctx.work_queued.is_set()


async def test_disable_integrations_false_still_queues(
    api: httpx.AsyncClient, store: Store
) -> None:
    response = await api.post(
        EVENTS, params={"$disable_integrations": "false"}, json={"user": {"id": "u1"}}
    )
    assert response.status_code == 201
    assert types(await read_messages(store)) == ["event.created", "user.created"]


# -- deliveries -------------------------------------------------------------------------------


async def test_one_delivery_per_matching_webhook(api: httpx.AsyncClient, store: Store) -> None:
    every = await webhook(api)
    events_only = await webhook(api, event_types=["event.created"])
    users_only = await webhook(api, event_types=["user.created", "user.updated"])
    deletions = await webhook(api, event_types=["event.deleted", "user.deleted"])
    paused = await webhook(api, enabled=False)

    event = await new_event(api, {"user": {"organization_user_id": "jane"}})
    created, user_created = await read_messages(store)
    found = await read_deliveries(store)
    assert sorted((d["webhook_id"], d["message_id"]) for d in found) == sorted(
        [
            (every, created["id"]),
            (every, user_created["id"]),
            (events_only, created["id"]),
            (users_only, user_created["id"]),
            (paused, created["id"]),
            (paused, user_created["id"]),
        ]
    )
    assert deletions not in {d["webhook_id"] for d in found}
    for delivery in found:
        assert delivery["id"].startswith("dlv_")
        assert delivery["organization_id"] == "acme"
        assert delivery["user_id"] == event["user"]["id"]
        assert delivery["status"] == "pending"
        assert delivery["attempt_count"] == 0
        assert delivery["lease_owner"] is None
        assert delivery["last_outcome"] is None

    # The disabled webhook's deliveries wait in order, like the others'.
    paused_rows = [d for d in found if d["webhook_id"] == paused]
    assert [(d["message_id"], d["seq"]) for d in paused_rows] == [
        (created["id"], 1),
        (user_created["id"], 2),
    ]
    assert paused_rows[1]["due_ms"] is None


async def test_regulation_filters(api: httpx.AsyncClient, store: Store) -> None:
    gdpr = await webhook(api)
    cpra = await webhook(api, regulations=["cpra"])
    both = await webhook(api, regulations=["gdpr", "cpra"])
    ccpa = await webhook(api, regulations=["ccpa"])

    async def reached(action: Any) -> set[str]:
        before = {d["id"] for d in await read_deliveries(store)}
        await action
        return {d["webhook_id"] for d in await read_deliveries(store) if d["id"] not in before}

    user_id = "user-1"
    assert await reached(
        new_event(api, {"user": {"id": user_id}, "regulation": "cpra", "consents": P1_ON})
    ) == {cpra, both}
    assert await reached(new_event(api, {"user": {"id": user_id}, "consents": P1_ON})) == {
        gdpr,
        both,
    }
    assert await reached(
        call(api, "PATCH", f"{USERS}/{user_id}", {"metadata": {"a": 1}}, status=200)
    ) == {gdpr, both}
    assert (
        await reached(
            new_event(api, {"user": {"id": user_id}, "regulation": "lgpd", "consents": P1_ON})
        )
        == set()
    )
    assert await reached(call(api, "DELETE", f"{USERS}/{user_id}", status=204)) == {gdpr, both}
    assert ccpa not in {d["webhook_id"] for d in await read_deliveries(store)}
    assert {m["regulation"] for m in await read_messages(store)} == {"gdpr", "cpra", "lgpd"}


async def test_sequence_numbers_per_webhook_and_user(api: httpx.AsyncClient, store: Store) -> None:
    hook_a = await webhook(api)
    hook_b = await webhook(api, event_types=["event.created"])

    jane = "user-jane"
    await new_event(api, {"user": {"id": jane}, "consents": P1_ON})  # event.created, user.created
    await new_event(api, {"user": {"id": jane}, "consents": P1_OFF})  # event.created, user.updated
    await new_event(api, {"user": {"id": jane}, "consents": P1_OFF})  # event.created
    john = "user-john"
    await new_event(api, {"user": {"id": john}})  # event.created, user.created
    await new_event(api, {"user": {"id": jane}, "consents": P1_ON})  # event.created, user.updated

    all_messages = {m["id"]: m for m in await read_messages(store)}
    found = await read_deliveries(store)

    def queue(hook: str, user: str) -> list[tuple[int, str, int | None]]:
        rows = sorted(
            (d for d in found if d["webhook_id"] == hook and d["user_id"] == user),
            key=lambda d: d["seq"],
        )
        return [(d["seq"], all_messages[d["message_id"]]["type"], d["due_ms"]) for d in rows]

    assert queue(hook_a, jane) == [
        (1, "event.created", NOW_MS),
        (2, "user.created", None),
        (3, "event.created", None),
        (4, "user.updated", None),
        (5, "event.created", None),
        (6, "event.created", None),
        (7, "user.updated", None),
    ]
    assert queue(hook_b, jane) == [
        (1, "event.created", NOW_MS),
        (2, "event.created", None),
        (3, "event.created", None),
        (4, "event.created", None),
    ]
    assert queue(hook_a, john) == [(1, "event.created", NOW_MS), (2, "user.created", None)]
    assert queue(hook_b, john) == [(1, "event.created", NOW_MS)]

    # Sequence numbers follow the order the changes happened in.
    for hook, user in ((hook_a, jane), (hook_b, jane), (hook_a, john)):
        by_seq = sorted(
            (d for d in found if d["webhook_id"] == hook and d["user_id"] == user),
            key=lambda d: d["seq"],
        )
        assert [d["pk"] for d in by_seq] == sorted(d["pk"] for d in by_seq)

    async with store.read() as tx:
        rows = await inspect.rows(tx, "delivery_queues")
    assert sorted((r["webhook_id"], r["user_id"], r["last_seq"], r["pending"]) for r in rows) == (
        sorted(
            [
                (hook_a, jane, 7, 7),
                (hook_b, jane, 4, 4),
                (hook_a, john, 2, 2),
                (hook_b, john, 1, 1),
            ]
        )
    )


async def test_messages_without_matching_webhooks_queue_no_delivery(
    api: httpx.AsyncClient, store: Store
) -> None:
    await webhook(api, event_types=["user.deleted"])
    await new_event(api, {"user": {"id": "u1"}})
    assert types(await read_messages(store)) == ["event.created", "user.created"]
    assert await read_deliveries(store) == []
    assert await count(store, "delivery_queues") == 0


async def test_a_new_webhook_gets_only_later_changes(api: httpx.AsyncClient, store: Store) -> None:
    await new_event(api, {"user": {"id": "u1"}})
    hook = await webhook(api)
    await new_event(api, {"user": {"id": "u1"}})
    found = await read_deliveries(store)
    assert [(d["webhook_id"], d["seq"], d["due_ms"]) for d in found] == [(hook, 1, NOW_MS)]


async def test_deleting_a_webhook_removes_its_deliveries(
    api: httpx.AsyncClient, store: Store
) -> None:
    doomed = await webhook(api)
    kept = await webhook(api)
    await new_event(api, {"user": {"id": "u1"}})
    await new_event(api, {"user": {"id": "u2"}})
    assert len(await read_deliveries(store)) == 8

    await call(api, "DELETE", f"/v1/webhooks/{doomed}", status=204)
    remaining = await read_deliveries(store)
    assert len(remaining) == 4
    assert {d["webhook_id"] for d in remaining} == {kept}
    async with store.read() as tx:
        queues = [row["webhook_id"] for row in await inspect.rows(tx, "delivery_queues")]
    assert set(queues) == {kept}
    assert len(await read_messages(store)) == 4  # the messages stay for the other webhook


# -- atomicity --------------------------------------------------------------------------------


@pytest.fixture
async def fragile_api(
    settings: Settings, ctx: Context, org: tuple[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API, answering its own 500s instead of raising them into the test."""
    transport = httpx.ASGITransport(app=create_app(settings, ctx), raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://relay.test",
        headers={"Authorization": f"Bearer {org[1]}"},
    ) as http:
        yield http


class Boom(RuntimeError):
    pass


def break_enqueue(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """queue.enqueue writes the messages and deliveries, then fails: the whole change must go."""
    original = queue.enqueue
    calls: list[int] = []

    async def enqueue_then_fail(
        tx: Tx,
        new_messages: Sequence[MessageRecord],
        new: Sequence[NewDelivery],
        now_ms: int,
        now: str,
    ) -> None:
        await original(tx, new_messages, new, now_ms, now)
        calls.append(len(new))
        raise Boom("the database went away after the event insert")

    monkeypatch.setattr(queue, "enqueue", enqueue_then_fail)
    # The write path's batch writes its outbox in write_batch.write (on PostgreSQL in the
    # same statement as the event): fail right after it.
    original_write = write_batch.write

    async def write_then_fail(tx: Tx, **rows: Any) -> Any:
        await original_write(tx, **rows)
        calls.append(len(rows["new_deliveries"]))
        raise Boom("the database went away after the event insert")

    monkeypatch.setattr(write_batch, "write", write_then_fail)
    return calls


def assert_server_error(response: httpx.Response) -> None:
    assert 500 <= response.status_code < 600, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == response.status_code


async def test_a_failed_outbox_write_leaves_nothing(
    fragile_api: httpx.AsyncClient,
    store: Store,
    ctx: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await webhook(fragile_api)
    ctx.work_queued.clear()
    calls = break_enqueue(monkeypatch)

    response = await fragile_api.post(
        EVENTS, json={"id": "evt-1", "user": {"organization_user_id": "jane"}, "consents": P1_ON}
    )
    assert_server_error(response)
    assert calls == [2]  # it did get as far as the deliveries
    for table in OUTBOX_TABLES:
        assert await count(store, table) == 0, table
    assert not ctx.work_queued.is_set()
    assert (await fragile_api.get(f"{EVENTS}/evt-1")).status_code == 404
    listed = await fragile_api.get(USERS, params={"organization_user_id": "jane"})
    assert listed.json() == {"data": [], "next_cursor": None}


async def test_failed_outbox_writes_leave_existing_rows_as_they_were(
    fragile_api: httpx.AsyncClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await webhook(fragile_api)
    created = await fragile_api.post(
        EVENTS, json={"user": {"organization_user_id": "jane"}, "consents": P1_ON}
    )
    event = created.json()
    user_id = event["user"]["id"]
    user = (await fragile_api.get(f"{USERS}/{user_id}")).json()
    counts = [await count(store, table) for table in OUTBOX_TABLES]
    break_enqueue(monkeypatch)

    for method, path, payload in (
        ("POST", EVENTS, {"user": {"id": user_id}, "consents": P1_OFF}),
        ("PATCH", f"{EVENTS}/{event['id']}", {"consents": P1_OFF}),
        ("DELETE", f"{EVENTS}/{event['id']}", None),
        ("POST", USERS, {"id": "u2"}),
        ("PATCH", f"{USERS}/{user_id}", {"metadata": {"a": 1}}),
        ("DELETE", f"{USERS}/{user_id}", None),
    ):
        response = await fragile_api.request(method, path, json=payload)
        assert_server_error(response)
        assert [await count(store, table) for table in OUTBOX_TABLES] == counts, (method, path)
        assert (await fragile_api.get(f"{EVENTS}/{event['id']}")).json() == event
        assert (await fragile_api.get(f"{USERS}/{user_id}")).json() == user
