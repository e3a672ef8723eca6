"""Sample payloads and the test send."""

from __future__ import annotations

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from consent_relay.domain.rules import EVENT_TYPES
from consent_relay.runtime import Context
from tests.receiver import Receiver
from tests.workers import make_webhook, running


@pytest.mark.parametrize("kind", EVENT_TYPES)
async def test_samples_of_every_type(api: httpx.AsyncClient, kind: str) -> None:
    plain = (await api.get("/v1/webhooks/samples", params={"type": kind})).json()
    assert plain["type"] == kind
    assert set(plain["parameters"]) in ({"entity"}, {"source", "old_entity", "new_entity"})
    flat = (await api.get("/v1/webhooks/samples", params={"type": kind, "flatten": True})).json()
    assert flat["type"] == kind
    assert all(key == "type" or key.startswith("parameters__entity__") for key in flat)


async def test_unknown_sample_type_is_422(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/webhooks/samples", params={"type": "user.exploded"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "type"


async def test_test_send_reaches_only_that_webhook_signed(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    target = await make_webhook(api, receiver.url("/target"))
    await make_webhook(api, receiver.url("/other"))
    response = await api.post(f"/v1/webhooks/{target['id']}/test", json={"type": "event.deleted"})
    assert response.status_code == 202
    async with running(ctx):
        await receiver.wait_for(1, "/target")
    assert receiver.at("/other") == []
    [item] = receiver.at("/target")
    assert item.json["type"] == "event.deleted"
    Webhook(target["signing_secret"]).verify(item.body, item.headers)
    assert item.headers["webhook-id"] == response.json()["message_id"]


async def test_test_send_to_unknown_webhook_is_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/webhooks/wh_missing/test")
    assert response.status_code == 404
