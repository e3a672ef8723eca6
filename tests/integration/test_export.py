"""The data-subject export (GET /v1/consents/users/{id}/export), on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

from consent_relay.runtime import Context
from consent_relay.storage import inspect
from tests.e2e.helpers import consent_event, eventually, get_json, post_event, read
from tests.receiver import Receiver
from tests.workers import make_webhook, running


async def test_the_export_holds_state_events_and_ledger_in_one_document(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    email = await make_webhook(api, receiver.url("/email"))
    first = await post_event(api, consent_event("jane@example.com", "news", True))
    jane = first["user"]["id"]
    second = await post_event(
        api, consent_event("jane@example.com", "news", False, regulation="ccpa")
    )
    await post_event(api, consent_event("joe@example.com", "news", True))  # not in Jane's
    async with running(ctx):

        async def all_delivered() -> bool:
            return await read(ctx, inspect.count_undelivered) == 0

        await eventually(all_delivered, within=20, what="every delivery delivered")
    delivered_to_jane = await read(ctx, inspect.count, "deliveries", user_id=jane)

    exported = await get_json(api, f"/v1/consents/users/{jane}/export")
    assert exported["user_id"] == jane
    assert exported["organization_id"] == "acme"
    assert exported["erased_at"] is None
    assert [e["id"] for e in exported["events"]] == [first["id"], second["id"]]
    assert set(exported["state"]) == {"gdpr", "ccpa"}
    gdpr = exported["state"]["gdpr"]
    assert gdpr["organization_user_id"] == "jane@example.com"
    assert [p["enabled"] for p in gdpr["consents"]["purposes"]] == [True]
    assert [p["enabled"] for p in exported["state"]["ccpa"]["consents"]["purposes"]] == [False]
    ledger = exported["ledger"]
    assert len(ledger) == int(delivered_to_jane) >= 2
    assert {e["user_id"] for e in ledger} == {jane}
    assert {e["webhook_id"] for e in ledger} == {email["id"]}
    assert all(len(e["payload_sha256"]) == 64 for e in ledger)


async def test_the_export_of_a_deleted_user_still_tells_who_was_told_what(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    await make_webhook(api, receiver.url("/email"))
    created = await post_event(api, consent_event("jane@example.com", "news", True))
    jane = created["user"]["id"]
    response = await api.delete(f"/v1/consents/users/{jane}")
    assert response.status_code == 204
    async with running(ctx):
        await receiver.wait_for(3)

        async def three() -> bool:
            return await read(ctx, inspect.count, "ledger_entries") == 3

        await eventually(three, within=20, what="three ledger entries")
    exported = await get_json(api, f"/v1/consents/users/{jane}/export")
    assert exported["state"] is None
    assert exported["events"] == []
    assert exported["erased_at"] is not None
    assert [e["type"] for e in exported["ledger"]] == [
        "event.created", "user.created", "user.deleted",
    ]  # fmt: skip
    assert "jane@example.com" not in str(exported)


async def test_the_export_of_an_unknown_user_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/consents/users/nobody/export")
    assert response.status_code == 404
    assert "nobody" in response.text
