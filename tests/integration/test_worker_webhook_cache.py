"""The worker's prepared webhooks (``delivery.requests.WebhookCache``) follow the webhooks its
claims need, not every webhook in the database: reading and preparing all of them every two
seconds blocked the worker's event loop for 100-157 ms at a time with 5,000 webhooks. A
change, a deletion or a key that cannot open a webhook's secrets still reaches the worker
within ``max_age``."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any

import pytest

from consent_relay import crypto
from consent_relay.delivery import requests
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn, WebhookIn, WebhookPatch
from consent_relay.services import orgs, webhooks
from consent_relay.storage.records import WebhookRecord

URL = "http://127.0.0.1:9/hook"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prepared(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each webhook was prepared (its secrets decrypted)."""
    counts: Counter[str] = Counter()
    real = requests.prepare

    def counting(ctx: Context, hook: WebhookRecord) -> requests.PreparedWebhook:
        counts[hook.id] += 1
        return real(ctx, hook)

    monkeypatch.setattr(requests, "prepare", counting)
    return counts


async def _hooks(ctx: Context, count: int) -> list[str]:
    await orgs.create_organization(ctx, OrganizationIn(id="acme"))
    made = [
        await webhooks.create_webhook(ctx, "acme", WebhookIn.model_validate({"url": URL}))
        for _ in range(count)
    ]
    return [str(hook["id"]) for hook in made]


def _cache(ctx: Context, clock: Clock, **fields: Any) -> requests.WebhookCache:
    return requests.WebhookCache(ctx, clock=clock, **fields)


async def test_only_the_webhooks_claims_need_are_read_and_prepared(
    ctx: Context, prepared: Counter[str]
) -> None:
    active, *idle = await _hooks(ctx, 20)
    clock = Clock()
    cache = _cache(ctx, clock)
    await cache.refresh_if_stale()  # before any claim: nothing to read
    assert prepared == Counter()
    assert set(await cache.get_many({active})) == {active}
    assert prepared == Counter({active: 1})
    clock.now += 1.0  # fresh: nothing read again
    assert set(await cache.get_many({active})) == {active}
    assert prepared == Counter({active: 1})
    clock.now += 2.5  # stale: the webhooks in use read again, the idle ones still never
    await cache.refresh_if_stale()
    assert prepared == Counter({active: 2})
    assert not prepared.keys() & set(idle)


async def test_a_webhook_no_claim_needs_any_longer_is_let_go(
    ctx: Context, prepared: Counter[str]
) -> None:
    first, second = await _hooks(ctx, 2)
    clock = Clock()
    cache = _cache(ctx, clock, idle_after=60.0)
    await cache.get_many({first})
    clock.now += 30.0
    await cache.get_many({second})  # stale: both read again (first used 30 s ago)
    assert prepared == Counter({first: 2, second: 1})
    clock.now += 40.0  # first unused for 70 s, second for 40
    await cache.refresh_if_stale()
    assert prepared == Counter({first: 2, second: 2})
    clock.now += 3.0
    assert first in await cache.get_many({first})  # read again when needed again
    assert prepared == Counter({first: 3, second: 3})


async def test_a_change_and_a_deletion_reach_the_cache_within_max_age(ctx: Context) -> None:
    kept, deleted = await _hooks(ctx, 2)
    clock = Clock()
    cache = _cache(ctx, clock)
    assert set(await cache.get_many({kept, deleted})) == {kept, deleted}
    await webhooks.update_webhook(
        ctx, "acme", kept, WebhookPatch.model_validate({"url": URL + "/moved"})
    )
    await webhooks.delete_webhook(ctx, "acme", deleted)
    assert (await cache.get_many({kept}))[kept].url == URL  # within max_age: as read
    clock.now += 2.5
    hooks = await cache.get_many({kept, deleted})
    assert set(hooks) == {kept}
    assert hooks[kept].url == URL + "/moved"


async def test_a_webhook_the_key_cannot_open_is_held_and_said_once(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    fine, *_ = await _hooks(ctx, 1)
    other_key = crypto.new_key()
    rekeyed = dataclasses.replace(
        ctx,
        settings=ctx.settings.model_copy(update={"secret_key": other_key}),
        box=crypto.SecretBox([other_key]),
    )
    caplog.set_level(logging.WARNING, logger="consent_relay.worker")
    clock = Clock()
    cache = _cache(rekeyed, clock)
    assert await cache.get_many({fine}) == {}
    assert cache.broken == {fine}  # the worker leaves it out of its claims
    clock.now += 2.5
    await cache.refresh_if_stale()  # looked at again, not said again
    assert cache.broken == {fine}
    said = [r.getMessage() for r in caplog.records if fine in r.getMessage()]
    assert len(said) == 1
    assert "cannot be prepared" in said[0]
    # Back under a key that opens it: prepared again at the next refresh, and said so.
    cache.ctx = ctx
    clock.now += 2.5
    await cache.refresh_if_stale()
    assert cache.broken == set()
    assert set(await cache.get_many({fine})) == {fine}
    assert any("can be prepared again" in r.getMessage() for r in caplog.records)
