"""Metrics move when deliveries do."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from consent_relay.runtime import Context
from tests.integration.test_delivery import post_event
from tests.receiver import Receiver, status_sequence
from tests.workers import make_webhook, running


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def _scrape(api: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await api.get("/metrics")
    assert response.status_code == 200
    return _samples(response.text)


async def test_metrics_move_with_deliveries(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    receiver.behaviours["/m"] = status_sequence(500)
    hook = await make_webhook(api, receiver.url("/m"), event_types=["user.created"])
    before = await _scrape(api)
    ok_key = ("consent_relay_delivery_attempts_total", (("outcome", "ok"),))
    http_key = ("consent_relay_delivery_attempts_total", (("outcome", "E_HTTP"),))
    depth_key = ("consent_relay_queue_depth", (("webhook_id", hook["id"]),))
    await post_event(api, "m1@example.com", True)
    await post_event(api, "m2@example.com", True)
    queued = await _scrape(api)
    assert queued[depth_key] == 2
    async with running(ctx):
        await receiver.wait_for(3)
        for _ in range(200):
            after = await _scrape(api)
            if after[depth_key] == 0:
                break
            await asyncio.sleep(0.02)
    assert after[depth_key] == 0
    assert after[ok_key] - before.get(ok_key, 0) == 2
    assert after[http_key] - before.get(http_key, 0) == 1
    route = (
        "consent_relay_api_requests_total",
        (("method", "POST"), ("route", "/v1/consents/events"), ("status", "201")),
    )
    assert after[route] - before.get(route, 0) == 2
