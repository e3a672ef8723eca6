"""Test sends go out as the webhook's reserved test user: never queued behind a real user."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from consent_relay.domain import samples
from consent_relay.runtime import Context
from consent_relay.schemas import Identifier
from tests.receiver import Received, Receiver
from tests.workers import make_webhook, running


def _refuse_real_users(item: Received, _count: int) -> web.StreamResponse:
    """The receiver is down for real traffic; test sends (about the test user) pass."""
    if samples.is_reserved_user_id(item.json["parameters"]["entity"]["user"]["id"]):
        return web.Response(status=204)
    return web.Response(status=500, text="down")


async def test_a_real_user_named_like_the_sample_does_not_hold_back_a_test_send(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    receiver.behaviours["/hook"] = _refuse_real_users
    hook = await make_webhook(api, receiver.url("/hook"), event_types=["event.created"])
    # A real user whose id is the one the sample payloads show, with a failing delivery that
    # waits a minute for its retry: the head of that user's queue to this webhook.
    real = await api.post(
        "/v1/consents/events",
        json={
            "user": {"id": samples.SAMPLE_USER_ID},
            "consents": {"purposes": [{"id": "analytics", "enabled": True}]},
        },
    )
    assert real.status_code == 201, real.text
    patient = dataclasses.replace(
        ctx, settings=ctx.settings.model_copy(update={"retry_schedule": [60.0] * 5})
    )
    async with running(patient):
        await receiver.wait_for(1)
        sent = await api.post(f"/v1/webhooks/{hook['id']}/test", json={"type": "event.created"})
        assert sent.status_code == 202, sent.text
        await receiver.wait_for(2, timeout=10)
    test_item = receiver.received[1]
    assert test_item.headers["webhook-id"] == sent.json()["message_id"]
    user_id = test_item.json["parameters"]["entity"]["user"]["id"]
    assert user_id == samples.test_user_id(hook["id"]) == f"test/{hook['id']}"
    delivery = (await api.get(f"/v1/deliveries/{sent.json()['delivery_id']}")).json()
    assert (delivery["status"], delivery["user_id"]) == ("delivered", user_id)
    listed = (await api.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["data"]
    assert [(d["user_id"], d["status"]) for d in listed] == [
        (samples.SAMPLE_USER_ID, "pending"),
        (user_id, "delivered"),
    ]


@pytest.mark.parametrize("webhook_id", ["wh_01HZX", "wh_x", "wh_0190f4c26a1e7c3b"])
def test_no_real_user_can_take_a_test_user_id(webhook_id: str) -> None:
    reserved = samples.test_user_id(webhook_id)
    assert samples.is_reserved_user_id(reserved)
    with pytest.raises(ValidationError):
        TypeAdapter(Identifier).validate_python(reserved)


@pytest.mark.parametrize(
    ("user_id", "reserved"),
    [
        ("test/wh_1", True),
        ("sample-user-0001", False),
        ("test:wh_1", False),
        ("tester/x", False),
        ("0190f4c2-6a1e-7c3b-9d52-2f7e6b1a0c11", False),
    ],
)
def test_reserved_user_ids(user_id: str, reserved: bool) -> None:
    assert samples.is_reserved_user_id(user_id) is reserved
