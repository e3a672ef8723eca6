"""Every row of docs/webhook-rules.md over real HTTP: bodies, order, signatures, headers, flatten,
regulation, filters, paused webhooks and secret rotation. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import os
from collections import defaultdict
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn
from consent_relay.services import orgs
from consent_relay.storage import inspect
from tests.e2e.helpers import (
    consent_event,
    eventually,
    get_json,
    make_webhook,
    post_event,
    read,
    running,
)
from tests.receiver import Received, Receiver

JSON = dict[str, Any]
# Per user id, the messages in the order they must arrive: (type, parameters).
Expected = dict[str, list[tuple[str, JSON]]]
QUIET = {"$disable_integrations": "true"}


def user_id_of(body: JSON) -> str:
    """The user a (non-flattened) message is about: its delivery queue."""
    parameters = body["parameters"]
    entity = parameters.get("entity") or parameters["new_entity"]
    user_id: str = entity["user"]["id"] if body["type"].startswith("event.") else entity["id"]
    return user_id


def by_user(items: list[Received]) -> Expected:
    seen: Expected = defaultdict(list)
    for item in items:
        body = item.json
        assert set(body) == {"type", "parameters"}, body.keys()
        seen[user_id_of(body)].append((body["type"], body["parameters"]))
    return dict(seen)


def total(expected: Expected) -> int:
    return sum(len(messages) for messages in expected.values())


async def get_user(api: httpx.AsyncClient, user_id: str) -> JSON:
    return await get_json(api, f"/v1/consents/users/{user_id}")


async def patch(api: httpx.AsyncClient, path: str, body: JSON, *, quiet: bool = False) -> JSON:
    response = await api.patch(path, json=body, params=QUIET if quiet else {})
    assert response.status_code == 200, response.text
    changed: JSON = response.json()
    return changed


async def delete(api: httpx.AsyncClient, path: str, *, quiet: bool = False) -> None:
    response = await api.delete(path, params=QUIET if quiet else {})
    assert response.status_code == 204, response.text


async def play_every_row(api: httpx.AsyncClient) -> Expected:
    """One write per row of docs/webhook-rules.md's table; returns what each must fire, per user."""
    expected: Expected = defaultdict(list)

    # Event created, confirmed, user is new: event.created, user.created (event applied).
    ev1 = await post_event(api, consent_event("alice", "analytics", True))
    alice_id = ev1["user"]["id"]
    alice = await get_user(api, alice_id)
    assert alice["consents"]["purposes"][0]["enabled"] is True
    expected[alice_id] += [("event.created", {"entity": ev1}), ("user.created", {"entity": alice})]

    # Event created, confirmed, user exists and changes: event.created, user.updated.
    ev2 = await post_event(api, consent_event("alice", "analytics", False))
    before, alice = alice, await get_user(api, alice_id)
    expected[alice_id] += [
        ("event.created", {"entity": ev2}),
        ("user.updated", {"source": ev2, "old_entity": before, "new_entity": alice}),
    ]

    # Event created, confirmed, user exists, no effective change: event.created only.
    ev3 = await post_event(api, consent_event("alice", "analytics", False))
    assert (await get_user(api, alice_id))["version"] == alice["version"]
    expected[alice_id] += [("event.created", {"entity": ev3})]

    # Event created, pending, user is new: event.created, user.created without the choices.
    ev4 = await post_event(api, consent_event("bob", "analytics", True, status="pending_approval"))
    bob_id = ev4["user"]["id"]
    bob = await get_user(api, bob_id)
    assert bob["consents"]["purposes"] == []
    expected[bob_id] += [("event.created", {"entity": ev4}), ("user.created", {"entity": bob})]

    # Event created, pending, user exists: event.created only.
    ev5 = await post_event(api, consent_event("alice", "ads", True, status="pending_approval"))
    expected[alice_id] += [("event.created", {"entity": ev5})]

    # Pending event changed, still pending: event.created again.
    ev5b = await patch(api, f"/v1/consents/events/{ev5['id']}", {"metadata": {"step": "b"}})
    assert ev5b["status"] == "pending_approval"
    expected[alice_id] += [("event.created", {"entity": ev5b})]

    # Event confirmed: event.updated, then user.updated (the ads choice applies now).
    ev5c = await patch(api, f"/v1/consents/events/{ev5['id']}", {"status": "confirmed"})
    before, alice = alice, await get_user(api, alice_id)
    expected[alice_id] += [
        ("event.updated", {"source": ev5c, "old_entity": ev5b, "new_entity": ev5c}),
        ("user.updated", {"source": ev5c, "old_entity": before, "new_entity": alice}),
    ]

    # Confirmed event changed, user changes: event.updated, user.updated.
    ev3b = await patch(
        api,
        f"/v1/consents/events/{ev3['id']}",
        {"consents": {"purposes": [{"id": "analytics", "enabled": True}]}},
    )
    before, alice = alice, await get_user(api, alice_id)
    expected[alice_id] += [
        ("event.updated", {"source": ev3b, "old_entity": ev3, "new_entity": ev3b}),
        ("user.updated", {"source": ev3b, "old_entity": before, "new_entity": alice}),
    ]

    # Confirmed event changed, user unchanged: event.updated only.
    ev1b = await patch(api, f"/v1/consents/events/{ev1['id']}", {"metadata": {"note": "x"}})
    assert (await get_user(api, alice_id))["version"] == alice["version"]
    expected[alice_id] += [
        ("event.updated", {"source": ev1b, "old_entity": ev1, "new_entity": ev1b}),
    ]

    # Event deleted: event.deleted (the deleted event), user.updated (recomputed user).
    await delete(api, f"/v1/consents/events/{ev3['id']}")
    before, alice = alice, await get_user(api, alice_id)
    assert before != alice
    expected[alice_id] += [
        ("event.deleted", {"entity": ev3b}),
        ("user.updated", {"source": ev3b, "old_entity": before, "new_entity": alice}),
    ]

    # User created by the API: user.created.
    response = await api.post("/v1/consents/users", json={"organization_user_id": "carol"})
    assert response.status_code == 201, response.text
    carol: JSON = response.json()
    carol_id = carol["id"]
    expected[carol_id] += [("user.created", {"entity": carol})]

    # User changed by the API: user.updated with a null source; a no-op change: nothing.
    before = carol
    carol = await patch(api, f"/v1/consents/users/{carol_id}", {"metadata": {"tier": "gold"}})
    assert carol == await get_user(api, carol_id)
    expected[carol_id] += [
        ("user.updated", {"source": None, "old_entity": before, "new_entity": carol})
    ]
    await patch(api, f"/v1/consents/users/{carol_id}", {"metadata": {"tier": "gold"}})

    # User deleted: user.deleted (the deleted user); its events go with it, silently.
    bob = await get_user(api, bob_id)
    await delete(api, f"/v1/consents/users/{bob_id}")
    expected[bob_id] += [("user.deleted", {"entity": bob})]

    # Any write with ?$disable_integrations=true: nothing.
    quiet = await post_event(api, consent_event("alice", "analytics", False), quiet=True)
    await patch(api, f"/v1/consents/events/{quiet['id']}", {"metadata": {"q": 1}}, quiet=True)
    await delete(api, f"/v1/consents/events/{quiet['id']}", quiet=True)
    await patch(api, f"/v1/consents/users/{carol_id}", {"metadata": {"q": 2}}, quiet=True)
    await delete(api, f"/v1/consents/users/{carol_id}", quiet=True)
    response = await api.post(
        "/v1/consents/users", json={"organization_user_id": "dave"}, params=QUIET
    )
    assert response.status_code == 201, response.text
    return dict(expected)


async def test_every_row_arrives_signed_with_its_headers_in_order(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    headers = {"X-Env": "e2e", "X-Tenant": "acme"}
    hook = await make_webhook(api, receiver.url("/all"), headers=headers)
    filtered = await make_webhook(
        api, receiver.url("/types"), event_types=["user.created", "event.deleted"]
    )
    expected = await play_every_row(api)
    wanted = {"user.created", "event.deleted"}
    expected_filtered = {
        user: kept
        for user, messages in expected.items()
        if (kept := [m for m in messages if m[0] in wanted])
    }
    queued = await read(ctx, inspect.count, "deliveries")
    assert queued == total(expected) + total(expected_filtered)

    async with running(ctx):
        await receiver.wait_for(total(expected), path="/all")
        await receiver.wait_for(total(expected_filtered), path="/types")

        async def all_recorded() -> bool:
            left = await read(ctx, inspect.count_undelivered)
            return int(left) == 0

        await eventually(all_recorded, within=10, what="deliveries recorded")

    received = receiver.at("/all")
    assert len(received) == total(expected)  # nothing more: quiet writes fired nothing
    assert by_user(received) == expected
    assert by_user(receiver.at("/types")) == expected_filtered

    verifier = Webhook(hook["signing_secret"])
    for item in received:
        verifier.verify(item.body, item.headers)
        assert item.headers["X-Env"] == "e2e"
        assert item.headers["X-Tenant"] == "acme"
        assert item.headers["Content-Type"] == "application/json"
        assert item.headers["User-Agent"].startswith("consent-relay/")
        assert item.headers["webhook-id"].startswith("msg_")
        assert "Authorization" not in item.headers
    assert len({item.headers["webhook-id"] for item in received}) == len(received)
    other = Webhook(filtered["signing_secret"])
    for item in receiver.at("/types"):
        other.verify(item.body, item.headers)
        assert "X-Env" not in item.headers
        with pytest.raises(WebhookVerificationError):
            verifier.verify(item.body, item.headers)


async def test_flattened_seed_example_and_regulation_field(
    client: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    created = await orgs.create_organization(ctx, OrganizationIn(id="didomi", name="Didomi"))
    client.headers["Authorization"] = f"Bearer {created['api_key']}"
    flat = await make_webhook(client, receiver.url("/flat"), flatten=True)
    both = await make_webhook(client, receiver.url("/both"), regulations=["gdpr", "cpra"])
    gdpr_only = await make_webhook(client, receiver.url("/gdpr"))

    # The seed's example event, with "geo_location" as the one purpose id throughout.
    seed_event = {
        "user": {"id": "some_unique_id", "organization_user_id": "[email protected]"},
        "consents": {
            "purposes": [
                {"id": "geo_location", "enabled": True},
                {"id": "market_research", "enabled": True},
            ]
        },
    }
    event = await post_event(client, seed_event)
    update = consent_event("[email protected]", "geo_location", False)
    await post_event(client, update)  # user.updated: flattened from new_entity
    cpra = await post_event(
        client, consent_event("cal@example.com", "sale", False, regulation="cpra")
    )
    response = await client.post("/v1/consents/users", json={"organization_user_id": "api-user"})
    assert response.status_code == 201, response.text

    async with running(ctx):
        await receiver.wait_for(5, path="/flat")  # 2 + 2 + user.created by the API
        await receiver.wait_for(7, path="/both")  # those 5 + cpra's 2
        await receiver.wait_for(5, path="/gdpr")

        async def all_recorded() -> bool:
            left = await read(ctx, inspect.count_undelivered)
            return int(left) == 0

        await eventually(all_recorded, within=10, what="deliveries recorded")

    # Flatten: the seed's printed keys with the seed's printed values.
    flat_bodies = [item.json for item in receiver.at("/flat")]
    for item in receiver.at("/flat"):
        Webhook(flat["signing_secret"]).verify(item.body, item.headers)
    seed_created = next(
        body
        for body in flat_bodies
        if body["type"] == "event.created" and body.get("parameters__entity__id") == event["id"]
    )
    printed = {
        "type": "event.created",
        "parameters__entity__organization_id": "didomi",
        "parameters__entity__user__id": "some_unique_id",
        "parameters__entity__user__organization_user_id": "[email protected]",
        "parameters__entity__consents__purposes__geo_location__enabled": True,
        "parameters__entity__consents__purposes__market_research__enabled": True,
    }
    assert {key: seed_created.get(key, "<missing>") for key in printed} == printed
    for body in flat_bodies:
        assert next(iter(body)) == "type"
        assert "regulation" not in body  # a gdpr-only webhook
        for key, value in body.items():
            assert key == "type" or key.startswith("parameters__entity__"), key
            assert not isinstance(value, dict), key
            assert "__source__" not in key, key
            assert "old_entity" not in key, key
            assert not key.endswith("__id") or "__purposes__" not in key, key
    flat_updated = [b for b in flat_bodies if b["type"] == "user.updated"]
    assert len(flat_updated) == 1
    assert flat_updated[0]["parameters__entity__id"] == "some_unique_id"
    assert flat_updated[0]["parameters__entity__consents__purposes__geo_location__enabled"] is False
    assert (
        flat_updated[0]["parameters__entity__consents__purposes__market_research__enabled"] is True
    )

    # Regulation: a webhook naming more than gdpr gets it on every body; gdpr-only does not.
    regulation_of: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for item in receiver.at("/both"):
        body = item.json
        assert set(body) == {"type", "parameters", "regulation"}
        regulation_of[user_id_of(body)].append((body["type"], body["regulation"]))
    assert regulation_of == {
        "some_unique_id": [
            ("event.created", "gdpr"),
            ("user.created", "gdpr"),
            ("event.created", "gdpr"),
            ("user.updated", "gdpr"),
        ],
        cpra["user"]["id"]: [("event.created", "cpra"), ("user.created", "cpra")],
        response.json()["id"]: [("user.created", "gdpr")],  # user API changes are gdpr
    }
    assert len(receiver.at("/both")) == 7
    gdpr_bodies = [item.json for item in receiver.at("/gdpr")]
    assert all(set(body) == {"type", "parameters"} for body in gdpr_bodies)
    assert cpra["user"]["id"] not in {user_id_of(body) for body in gdpr_bodies}
    assert both["regulations"] == ["gdpr", "cpra"]
    assert gdpr_only["regulations"] == ["gdpr"]


async def test_disabled_webhook_queues_then_delivers_everything_in_order(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    live = await make_webhook(api, receiver.url("/on"))
    paused = await make_webhook(api, receiver.url("/off"), enabled=False)
    assert paused["enabled"] is False
    created: dict[str, list[str]] = defaultdict(list)
    for round_ in range(4):
        for user in ("p1", "p2", "p3"):
            event = await post_event(api, consent_event(user, "analytics", round_ % 2 == 0))
            created[event["user"]["id"]].append(event["id"])
    count = 3 * 4 * 2  # event.created, and user.created / user.updated

    async with running(ctx):
        await receiver.wait_for(count, path="/on")

        async def on_recorded() -> bool:
            left = await read(ctx, inspect.count_undelivered, live["id"])
            return int(left) == 0

        await eventually(on_recorded, within=10, what="the enabled webhook's deliveries")
        # The worker has drained every due delivery it may take: the paused ones stay queued.
        assert receiver.at("/off") == []
        waiting = await read(
            ctx, inspect.count, "deliveries", webhook_id=paused["id"], status="pending"
        )
        assert waiting == count

        enabled = await patch(api, f"/v1/webhooks/{paused['id']}", {"enabled": True})
        assert enabled["enabled"] is True
        await receiver.wait_for(count, path="/off")

    def message_ids_per_user(path: str) -> dict[str, list[str]]:
        seen: dict[str, list[str]] = defaultdict(list)
        for item in receiver.at(path):
            seen[user_id_of(item.json)].append(item.headers["webhook-id"])
        return dict(seen)

    assert len(receiver.at("/off")) == count
    assert message_ids_per_user("/off") == message_ids_per_user("/on")
    for path in ("/on", "/off"):
        events_seen: dict[str, list[str]] = defaultdict(list)
        for item in receiver.at(path):
            body = item.json
            if body["type"] == "event.created":
                events_seen[user_id_of(body)].append(body["parameters"]["entity"]["id"])
        assert events_seen == created, path
    secret = Webhook(paused["signing_secret"])
    for item in receiver.at("/off"):
        secret.verify(item.body, item.headers)


async def test_rotated_secret_signs_beside_the_old_one(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    hook = await make_webhook(api, receiver.url("/rot"))
    old = hook["signing_secret"]
    response = await api.post(f"/v1/webhooks/{hook['id']}/rotate-secret")
    assert response.status_code == 200, response.text
    new = response.json()["signing_secret"]
    assert new.startswith("whsec_")
    assert new != old
    assert "signing_secret" not in (await get_json(api, f"/v1/webhooks/{hook['id']}"))

    await post_event(api, consent_event("rita", "analytics", True))
    async with running(ctx):
        await receiver.wait_for(2, path="/rot")

    stranger = Webhook("whsec_" + base64.b64encode(os.urandom(24)).decode())
    for item in receiver.at("/rot"):
        signatures = item.headers["webhook-signature"].split(" ")
        assert len(signatures) == 2
        assert all(s.startswith("v1,") for s in signatures)
        Webhook(old).verify(item.body, item.headers)
        Webhook(new).verify(item.body, item.headers)
        with pytest.raises(WebhookVerificationError):
            stranger.verify(item.body, item.headers)
