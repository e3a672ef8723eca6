"""A webhook whose secrets the current key cannot open shows as broken: in the API (``status``
and ``status_reason``), in the dashboard (list and page) and in the metrics
(``consent_relay_webhooks_broken``)."""

from __future__ import annotations

import html

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consent_relay import crypto
from consent_relay.runtime import Context
from tests.integration.test_dashboard import D, sign_in
from tests.workers import make_webhook

URL = "https://8.8.8.8/hook"


async def broken_gauge(client: httpx.AsyncClient) -> float:
    response = await client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "consent_relay_webhooks_broken":
                return float(sample.value)
    raise AssertionError("consent_relay_webhooks_broken is not exported")


async def encrypt_under_another_key(ctx: Context, webhook_id: str, what: str) -> None:
    """What a webhook created by a process on another key looks like (as one created while
    ``rotate-secret-key`` ran used to)."""
    other = crypto.SecretBox([crypto.new_key()])
    async with ctx.store.write() as tx:
        hook = await tx.get_webhook(None, webhook_id)
        assert hook is not None
        if what == "signing":
            hook.signing_secret = other.encrypt(ctx.box.decrypt(hook.signing_secret))
        else:
            hook.headers = {name: other.seal("v") for name in hook.headers}
        await tx.update_webhook(hook)


@pytest.mark.parametrize(
    ("what", "named"), [("signing", "the signing secret"), ("header", "header X-Api-Key")]
)
async def test_a_webhook_under_another_key_shows_as_broken(
    api: httpx.AsyncClient, ctx: Context, org: tuple[str, str], what: str, named: str
) -> None:
    fine = await make_webhook(api, URL)
    hook = await make_webhook(api, URL, headers={"X-Api-Key": "k"}, description="victim")
    assert (fine["status"], fine["status_reason"]) == ("ok", None)
    assert (hook["status"], hook["status_reason"]) == ("ok", None)
    assert await broken_gauge(api) == 0

    await encrypt_under_another_key(ctx, hook["id"], what)

    shown = (await api.get(f"/v1/webhooks/{hook['id']}")).json()
    assert shown["status"] == "broken"
    assert named in shown["status_reason"]
    assert "cannot be decrypted with the current key" in shown["status_reason"]
    listed = {h["id"]: h["status"] for h in (await api.get("/v1/webhooks")).json()["data"]}
    assert listed == {fine["id"]: "ok", hook["id"]: "broken"}
    assert await broken_gauge(api) == 1

    api.headers.pop("Authorization")
    await sign_in(api, org[1])
    listing = await api.get(D)
    rows = listing.text.split('data-testid="webhook-row"')[1:]
    [broken_row] = [row for row in rows if hook["id"] in row]
    [fine_row] = [row for row in rows if fine["id"] in row]
    assert 'data-testid="webhook-broken"' in broken_row
    assert named in html.unescape(broken_row)
    assert 'data-testid="webhook-broken"' not in fine_row
    page = await api.get(f"{D}/webhooks/{hook['id']}")
    assert 'data-testid="webhook-broken"' in page.text
    assert named in html.unescape(page.text)
    fine_page = await api.get(f"{D}/webhooks/{fine['id']}")
    assert 'data-testid="webhook-broken"' not in fine_page.text


async def test_rotating_the_signing_secret_repairs_a_webhook_broken_by_it(
    api: httpx.AsyncClient, ctx: Context
) -> None:
    hook = await make_webhook(api, URL)
    await encrypt_under_another_key(ctx, hook["id"], "signing")
    assert (await api.get(f"/v1/webhooks/{hook['id']}")).json()["status"] == "broken"
    rotated = await api.post(f"/v1/webhooks/{hook['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    assert (rotated.json()["status"], rotated.json()["status_reason"]) == ("ok", None)
    async with ctx.store.read() as tx:
        record = await tx.get_webhook(None, hook["id"])
    assert record is not None
    assert record.previous_signing_secret is None  # unreadable: no overlap to keep
    assert ctx.box.decrypt(record.signing_secret) == rotated.json()["signing_secret"]
