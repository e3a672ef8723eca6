"""/metrics shows the states of issue 14: paused and disabled webhooks, superseded dead
letters, automatic replays."""

from __future__ import annotations

import httpx

from consent_relay.runtime import Context
from consent_relay.storage import flow, tamper
from tests.integration.test_flow_control import post_event
from tests.integration.test_metrics import _scrape
from tests.receiver import Receiver
from tests.workers import make_webhook


async def test_metrics_show_paused_disabled_and_superseded(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    paused = await make_webhook(api, receiver.url("/p"), event_types=["user.created"])
    gone = await make_webhook(api, receiver.url("/g"), event_types=["user.created"])
    await post_event(api, "anna@example.com", True)
    async with ctx.store.write() as tx:
        await flow.pause(tx, [(paused["id"], ctx.clock_ms() + 60_000, "E_HTTP")])
        await tamper.disable_webhook(tx, gone["id"], "HTTP 410 at 2026-12-01T10:00:00.000Z")
        await tamper.set_delivery_status(tx, "superseded", webhook_id=gone["id"], clear_due=True)
    found = await _scrape(api)
    assert found[("consent_relay_webhooks_paused", ())] == 1
    assert found[("consent_relay_webhooks_disabled", ())] == 1
    superseded = ("consent_relay_deliveries_superseded", (("webhook_id", gone["id"]),))
    assert found[superseded] == 1
    assert ("consent_relay_deliveries_superseded", (("webhook_id", paused["id"]),)) not in found
    assert ("consent_relay_auto_replays_total", ()) in found
