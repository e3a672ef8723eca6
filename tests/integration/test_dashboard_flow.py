"""The dashboard's side of issue 14: the webhook form sets the rate limit and automatic
replay; the webhook page shows a 410's disabling, a Retry-After pause and superseded dead
letters."""

from __future__ import annotations

import re

import httpx

from consent_relay.domain.timefmt import now_ts
from consent_relay.runtime import Context
from consent_relay.storage import flow, tamper
from tests.integration.test_dashboard import D, create_via_form, errors_on, hook_form
from tests.integration.test_dashboard import signed_in as signed_in  # the fixture
from tests.integration.test_flow_control import post_event


async def test_form_sets_rate_limit_and_auto_replay(
    client: httpx.AsyncClient, signed_in: str
) -> None:
    hook_id = await create_via_form(
        client, signed_in, **hook_form("http://127.0.0.1:9/x", rate_limit="12.5")
    )
    page = (await client.get(f"{D}/webhooks/{hook_id}")).text
    assert re.search(r'data-testid="rate-limit">12.5 requests/s<', page)
    assert 'data-testid="auto-replay">no<' in page  # the box was not ticked
    form = (await client.get(f"{D}/webhooks/{hook_id}/edit")).text
    assert 'name="rate_limit" value="12.5"' in form
    refused = await client.post(
        f"{D}/webhooks", data={"csrf_token": signed_in, **hook_form("http://127.0.0.1:9/y",
                                                                      rate_limit="fast")}
    )  # fmt: skip
    assert "requests per second" in errors_on(refused, "rate_limit")


async def test_webhook_page_shows_disabled_paused_and_superseded(
    client: httpx.AsyncClient, api: httpx.AsyncClient, ctx: Context, signed_in: str
) -> None:
    hook_id = await create_via_form(client, signed_in, **hook_form("http://127.0.0.1:9/x"))
    await post_event(api, "anna@example.com", True)
    async with ctx.store.write() as tx:
        await flow.disable(tx, [(hook_id, "HTTP 410 at 2026-12-01T10:00:00.000Z")], now_ts())
        await tamper.set_delivery_status(tx, "superseded", webhook_id=hook_id, clear_due=True)
        await flow.pause(tx, [(hook_id, ctx.clock_ms() + 60_000, "E_HTTP")])
    page = (await client.get(f"{D}/webhooks/{hook_id}")).text
    assert 'data-testid="webhook-disabled"' in page
    assert "HTTP 410 at 2026-12-01T10:00:00.000Z" in page
    assert 'data-testid="webhook-paused"' in page
    assert re.search(r'data-testid="superseded-count"[^>]*>2<', page)
