"""Custom header values are secrets: encrypted at rest, masked in every answer and page,
sent in clear to the receiver only, redacted in stored attempts, never logged. A PATCH that
gives a value as the mask keeps the stored one; values stored in clear before this (legacy
rows) still go out, and ``rotate-secret-key`` encrypts them."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import httpx
import pytest

from consent_relay import crypto
from consent_relay.runtime import Context
from consent_relay.services import secret_keys
from consent_relay.storage.records import WebhookRecord
from tests.integration.test_dashboard import (
    D,
    create_via_form,
    csrf_of,
    hook_form,
    sign_in,
    token_endpoint,
)
from tests.receiver import Receiver
from tests.workers import make_webhook, running

MASK = "********"
ONLY_EVENTS = {"event_types": ["event.created"]}


@pytest.fixture
def canary() -> str:
    return f"canary-api-key-{secrets.token_hex(12)}"


async def record_of(ctx: Context, webhook_id: str) -> WebhookRecord:
    async with ctx.store.read() as tx:
        record = await tx.get_webhook(None, webhook_id)
    assert record is not None
    return record


async def post_event(api: httpx.AsyncClient, ouid: str) -> None:
    response = await api.post(
        "/v1/consents/events",
        json={
            "user": {"organization_user_id": ouid},
            "consents": {"purposes": [{"id": "analytics", "enabled": True}]},
        },
    )
    assert response.status_code == 201, response.text


async def attempt_headers(
    api: httpx.AsyncClient, webhook_id: str, canary: str
) -> list[dict[str, Any]]:
    """The request headers stored with every attempt to the webhook (read through the API,
    whose answers never hold ``canary``)."""
    listed = (await api.get(f"/v1/webhooks/{webhook_id}/deliveries")).json()["data"]
    found = []
    for delivery in listed:
        detail = await api.get(f"/v1/deliveries/{delivery['id']}")
        assert canary not in detail.text
        found += [attempt["request_headers"] for attempt in detail.json()["attempts"]]
    return found


async def test_header_values_are_encrypted_masked_delivered_and_redacted(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    canary: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await api.post(
        "/v1/webhooks",
        json={"url": receiver.url(), "headers": {"X-Api-Key": canary, "X-Env": "prod"}},
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    # Masked from the start: the creation's answer does not echo the values either.
    assert hook["headers"] == {"X-Api-Key": MASK, "X-Env": MASK}
    assert canary not in created.text

    # At rest: sealed (prefixed Fernet tokens) that the key opens.
    stored = (await record_of(ctx, hook["id"])).headers
    assert set(stored) == {"X-Api-Key", "X-Env"}
    assert all(crypto.is_sealed(v) for v in stored.values())
    assert canary not in str(stored)
    assert "prod" not in str(stored)
    assert ctx.box.unseal(stored["X-Api-Key"]) == canary

    answers = [
        await api.get(f"/v1/webhooks/{hook['id']}"),
        await api.get("/v1/webhooks"),
        await api.patch(f"/v1/webhooks/{hook['id']}", json={"description": "x"}),
    ]
    for answer in answers:
        assert answer.status_code == 200
        assert canary not in answer.text
    assert answers[0].json()["headers"] == {"X-Api-Key": MASK, "X-Env": MASK}
    assert answers[1].json()["data"][0]["headers"] == {"X-Api-Key": MASK, "X-Env": MASK}
    assert answers[2].json()["headers"] == {"X-Api-Key": MASK, "X-Env": MASK}

    # Sent in clear to the receiver; stored with the attempt as redacted.
    await post_event(api, "jane@example.com")
    async with running(ctx):
        await receiver.wait_for(1)
    [item] = receiver.received
    assert item.headers["X-Api-Key"] == canary
    assert item.headers["X-Env"] == "prod"
    [sent] = await attempt_headers(api, hook["id"], canary)
    assert sent["X-Api-Key"] == "[redacted]"
    assert sent["X-Env"] == "[redacted]"
    assert sent["webhook-id"] == item.headers["webhook-id"]  # ours stay readable

    # Never logged (DEBUG, every logger), neither in messages nor in their arguments.
    assert caplog.records
    assert canary not in caplog.text
    assert all(canary not in repr(record.args) for record in caplog.records)


async def test_patch_with_the_mask_keeps_the_stored_value(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, canary: str
) -> None:
    hook = await make_webhook(
        api, receiver.url(), headers={"X-Api-Key": canary, "X-Old": "gone"}, **ONLY_EVENTS
    )
    before = (await record_of(ctx, hook["id"])).headers["X-Api-Key"]
    # A GET-edit-PATCH round trip: the mask sent back keeps the value (whatever the name's
    # case); a header left out of ``headers`` is removed; a new value is stored.
    patched = await api.patch(
        f"/v1/webhooks/{hook['id']}",
        json={"headers": {"x-api-key": MASK, "X-New": "fresh"}},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["headers"] == {"x-api-key": MASK, "X-New": MASK}
    stored = (await record_of(ctx, hook["id"])).headers
    assert stored["x-api-key"] == before  # the very ciphertext: not re-encrypted, not lost
    assert ctx.box.unseal(stored["X-New"]) == "fresh"
    # A PATCH without ``headers`` keeps them all.
    await api.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True})
    assert (await record_of(ctx, hook["id"])).headers == stored

    await post_event(api, "jane@example.com")
    async with running(ctx):
        await receiver.wait_for(1)
    sent = receiver.received[0].headers
    assert (sent["x-api-key"], sent["X-New"], "X-Old" in sent) == (canary, "fresh", False)


@pytest.mark.parametrize(
    ("stored", "given"),
    [
        ({}, {"X-Api-Key": MASK}),  # nothing stored to keep
        ({"X-Other": "v"}, {"X-Api-Key": MASK}),  # another name's value is not kept
    ],
)
async def test_a_mask_with_nothing_to_keep_is_422(
    api: httpx.AsyncClient, ctx: Context, stored: dict[str, str], given: dict[str, str]
) -> None:
    hook = await make_webhook(api, "https://8.8.8.8/hook", headers=stored)
    patched = await api.patch(f"/v1/webhooks/{hook['id']}", json={"headers": given})
    assert patched.status_code == 422
    assert [e["field"] for e in patched.json()["errors"]] == ["headers.X-Api-Key"]
    assert (await api.get(f"/v1/webhooks/{hook['id']}")).json()["headers"] == {
        name: MASK for name in stored
    }
    created = await api.post("/v1/webhooks", json={"url": "https://8.8.8.8/h", "headers": given})
    assert created.status_code == 422
    assert [e["field"] for e in created.json()["errors"]] == ["headers.X-Api-Key"]


async def test_the_dashboard_masks_values_and_its_edit_form_keeps_them(
    client: httpx.AsyncClient,
    org: tuple[str, str],
    ctx: Context,
    receiver: Receiver,
    canary: str,
) -> None:
    csrf = await sign_in(client, org[1])
    form = hook_form(receiver.url(), header_name=["X-Api-Key", ""], header_value=[canary, ""])
    hook_id = await create_via_form(client, csrf, **form)
    pages = [
        await client.get(f"{D}/webhooks/{hook_id}"),
        await client.get(D),
        await client.get(f"{D}/webhooks/{hook_id}/edit"),
    ]
    for page in pages:
        assert page.status_code == 200
        assert canary not in page.text
    assert f"X-Api-Key: {MASK}" in pages[0].text
    assert f'value="{MASK}"' in pages[2].text

    # Saving the edit form as shown (the mask in the value field) keeps the stored value.
    edit = {**form, "csrf_token": csrf_of(pages[2]), "header_value": [MASK, ""]}
    edit["url"] = receiver.url("/moved")
    saved = await client.post(f"{D}/webhooks/{hook_id}/edit", data=edit)
    assert saved.status_code == 303, saved.text
    stored = (await record_of(ctx, hook_id)).headers
    assert ctx.box.unseal(stored["X-Api-Key"]) == canary


async def test_legacy_plaintext_values_are_delivered_and_rotation_encrypts_them(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, canary: str
) -> None:
    hook = await make_webhook(api, receiver.url(), headers={"X-Env": "prod"}, **ONLY_EVENTS)
    # A row from before header values were encrypted: the values in clear.
    async with ctx.store.write() as tx:
        record = await tx.get_webhook(None, hook["id"])
        assert record is not None
        sealed_env = record.headers["X-Env"]
        record.headers = {"X-Api-Key": canary, "X-Env": sealed_env}
        await tx.update_webhook(record)
    shown = (await api.get(f"/v1/webhooks/{hook['id']}")).json()
    assert (shown["headers"], shown["status"]) == ({"X-Api-Key": MASK, "X-Env": MASK}, "ok")
    assert canary not in str(shown)

    await post_event(api, "jane@example.com")
    async with running(ctx):
        await receiver.wait_for(1)
    assert receiver.received[0].headers["X-Api-Key"] == canary
    assert receiver.received[0].headers["X-Env"] == "prod"

    new_key = crypto.new_key()
    # (forced: the test's own connections use the database)
    count = await secret_keys.reencrypt(ctx.store, ctx.settings.secret_key, new_key, force=True)
    assert count == 3  # the signing secret and both header values
    stored = (await record_of(ctx, hook["id"])).headers
    new_box = crypto.SecretBox([new_key])
    assert all(crypto.is_sealed(value) for value in stored.values())
    assert stored["X-Env"] != sealed_env
    assert new_box.unseal(stored["X-Api-Key"]) == canary
    assert new_box.unseal(stored["X-Env"]) == "prod"
    assert canary not in str(stored)


async def test_token_request_header_values_are_secrets_too(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, canary: str
) -> None:
    receiver.behaviours["/token"] = token_endpoint
    oauth = {
        "token_url": receiver.url("/token"),
        "client_id": "relay",
        "client_secret": "s3cret",
        "token_request_headers": {"X-Token-Key": canary},
    }
    created = await api.post(
        "/v1/webhooks", json={"url": receiver.url("/hook"), "authentication": oauth, **ONLY_EVENTS}
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["authentication"]["token_request_headers"] == {"X-Token-Key": MASK}
    assert canary not in created.text
    stored = (await record_of(ctx, hook["id"])).authentication
    assert stored is not None
    assert crypto.is_sealed(stored["token_request_headers"]["X-Token-Key"])
    assert canary not in str(stored)

    # Settings sent back as shown (the mask, no client secret) keep both secrets.
    shown = {**oauth, "client_secret": None, "token_request_headers": {"X-Token-Key": MASK}}
    patched = await api.patch(f"/v1/webhooks/{hook['id']}", json={"authentication": shown})
    assert patched.status_code == 200, patched.text
    assert canary not in patched.text
    unknown = {**shown, "token_request_headers": {"X-Other": MASK}}
    refused = await api.patch(f"/v1/webhooks/{hook['id']}", json={"authentication": unknown})
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == [
        "authentication.token_request_headers.X-Other"
    ]

    await post_event(api, "jane@example.com")
    async with running(ctx):
        await receiver.wait_for(1, "/hook")
    assert receiver.at("/token")[0].headers["X-Token-Key"] == canary

    count = await secret_keys.reencrypt(
        ctx.store, ctx.settings.secret_key, new_key := crypto.new_key(), force=True
    )
    assert count == 3  # the signing secret, the client secret, the token request header
    rotated = (await record_of(ctx, hook["id"])).authentication
    assert rotated is not None
    assert crypto.SecretBox([new_key]).unseal(rotated["token_request_headers"]["X-Token-Key"]) == (
        canary
    )
