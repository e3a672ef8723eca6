"""The broken-webhook count behind ``consent_relay_webhooks_broken`` (``metrics.BrokenWebhooks``):
right after every kind of change to the webhooks, while reading at each count only the
webhooks of the organizations whose webhooks changed since the last one (their stamp,
``storage.webhook_versions``), never every webhook at each scrape. (The gauge as scraped,
and the API and the dashboard's view of a broken webhook: test_webhook_status.py.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

import pytest

from consent_relay import crypto, metrics
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn, WebhookIn
from consent_relay.services import orgs, webhooks
from consent_relay.storage.tx import Tx
from tests.integration.test_webhook_status import encrypt_under_another_key

URL = "https://8.8.8.8/hook"


async def webhook(ctx: Context, org_id: str) -> str:
    created = await webhooks.create_webhook(ctx, org_id, WebhookIn.model_validate({"url": URL}))
    return str(created["id"])


async def organization(ctx: Context, org_id: str) -> None:
    await orgs.create_organization(ctx, OrganizationIn(id=org_id))


async def seal_again_under_the_current_key(ctx: Context, webhook_id: str) -> None:
    async with ctx.store.write() as tx:
        hook = await tx.get_webhook(None, webhook_id)
        assert hook is not None
        hook.signing_secret = ctx.box.encrypt("whsec_" + "A" * 32)
        await tx.update_webhook(hook)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The organizations whose webhooks each count read, in order."""
    seen: list[list[str]] = []
    real = Tx.webhooks_of_organizations

    async def spied(self: Tx, org_ids: Collection[str]) -> Any:
        seen.append(sorted(org_ids))
        return await real(self, org_ids)

    monkeypatch.setattr(Tx, "webhooks_of_organizations", spied)
    return seen


async def test_the_count_follows_every_change_to_the_webhooks(ctx: Context) -> None:
    counter = metrics.BrokenWebhooks()
    await organization(ctx, "acme")
    await organization(ctx, "beta")
    await webhook(ctx, "acme")
    victim = await webhook(ctx, "acme")
    other = await webhook(ctx, "beta")
    assert await counter.count(ctx.store, ctx.box) == 0

    steps: list[tuple[str, Callable[[], Awaitable[None]], int]] = [
        (
            "a webhook put under another key",
            lambda: encrypt_under_another_key(ctx, victim, "signing"),
            1,
        ),
        (
            "a second one, another organization's",
            lambda: encrypt_under_another_key(ctx, other, "signing"),
            2,
        ),
        ("a broken one deleted", lambda: webhooks.delete_webhook(ctx, "acme", victim), 1),
        ("a broken one sealed again", lambda: seal_again_under_the_current_key(ctx, other), 0),
    ]
    for what, change, expected in steps:
        await change()
        assert await counter.count(ctx.store, ctx.box) == expected, what
        assert await counter.count(ctx.store, ctx.box) == expected, f"{what}, counted again"

    await organization(ctx, "gamma")  # a new organization with a broken webhook
    await encrypt_under_another_key(ctx, await webhook(ctx, "gamma"), "signing")
    assert await counter.count(ctx.store, ctx.box) == 1


async def test_a_count_reads_only_the_organizations_whose_webhooks_changed(
    ctx: Context, reads: list[list[str]]
) -> None:
    counter = metrics.BrokenWebhooks()
    for org_id in ("acme", "beta", "gamma"):
        await organization(ctx, org_id)
        await webhook(ctx, org_id)
    victim = await webhook(ctx, "beta")

    assert await counter.count(ctx.store, ctx.box) == 0
    assert reads == [["acme", "beta", "gamma"]]  # the first count reads them all
    assert await counter.count(ctx.store, ctx.box) == 0
    assert reads == [["acme", "beta", "gamma"]]  # nothing changed: no webhook read

    await encrypt_under_another_key(ctx, victim, "signing")
    assert await counter.count(ctx.store, ctx.box) == 1
    assert reads[1:] == [["beta"]]
    await organization(ctx, "delta")  # an organization with no webhook yet: stamp 0
    assert await counter.count(ctx.store, ctx.box) == 1
    assert reads[2:] == [["delta"]]
    assert await counter.count(ctx.store, ctx.box) == 1
    assert len(reads) == 3


async def test_a_count_under_another_key_starts_afresh(
    ctx: Context, reads: list[list[str]]
) -> None:
    counter = metrics.BrokenWebhooks()
    await organization(ctx, "acme")
    await webhook(ctx, "acme")
    await webhook(ctx, "acme")
    assert await counter.count(ctx.store, ctx.box) == 0
    stranger = crypto.SecretBox([crypto.new_key()])  # opens none of them
    assert await counter.count(ctx.store, stranger) == 2
    assert await counter.count(ctx.store, ctx.box) == 0
    assert reads == [["acme"], ["acme"], ["acme"]]
