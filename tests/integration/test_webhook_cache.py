"""The organization's webhooks cached per process (services/webhook_cache.py): a hit while
nothing changed, a miss after every kind of change, and fan-out exactly per the new set in a
process whose cache was filled before another process changed the webhooks.

"Another process" is a second context on a second ``Store`` over the same database, with its
own cache, as two API processes have (tests/e2e/test_webhook_cache_processes.py runs real
ones). Deliveries are read through ``storage.deliveries``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from consent_relay import crypto
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, UserIn, WebhookIn, WebhookPatch
from consent_relay.services import events, users, webhook_cache, webhooks
from consent_relay.settings import Settings
from consent_relay.storage import deliveries, webhook_versions
from consent_relay.storage.records import WebhookRecord
from consent_relay.storage.store import Store
from consent_relay.storage.tx import Tx

ORG = "acme"


@pytest.fixture
async def other(settings: Settings, store: Store) -> AsyncIterator[Context]:
    """Another process on the same database: its own store (engine, pool) and cache."""
    second = Store(settings.resolved_database_url, pool_size=2)
    yield Context(settings=settings, store=second, box=crypto.SecretBox([settings.secret_key]))
    await second.close()


async def _hook(ctx: Context, n: int, **fields: object) -> str:
    data = WebhookIn.model_validate({"url": f"http://127.0.0.1:9/in{n}", **fields})
    return (await webhooks.create_webhook(ctx, ORG, data))["id"]


async def _patch(ctx: Context, hook_id: str, **fields: object) -> None:
    await webhooks.update_webhook(ctx, ORG, hook_id, WebhookPatch.model_validate(fields))


async def _cached(ctx: Context) -> list[WebhookRecord]:
    async with ctx.store.write() as tx:
        return await webhook_cache.webhooks_for(tx, ORG)


async def _stored(ctx: Context) -> list[WebhookRecord]:
    async with ctx.store.read() as tx:
        return await tx.list_webhooks(ORG)


# -- hit and miss ------------------------------------------------------------------------------


async def test_a_second_read_with_nothing_changed_is_served_from_memory(
    ctx: Context, org: tuple[str, str]
) -> None:
    await _hook(ctx, 1)
    first, second = await _cached(ctx), await _cached(ctx)
    assert first == second == await _stored(ctx)
    assert second[0] is first[0]  # the very records kept: not read again


async def _create(other: Context, hook_ids: list[str]) -> None:
    hook_ids.append(await _hook(other, 2))


async def _update_filters(other: Context, hook_ids: list[str]) -> None:
    await _patch(other, hook_ids[0], regulations=["ccpa"], event_types=["user.updated"])


async def _update_url(other: Context, hook_ids: list[str]) -> None:
    await _patch(other, hook_ids[0], url="http://127.0.0.1:9/moved")


async def _disable(other: Context, hook_ids: list[str]) -> None:
    await _patch(other, hook_ids[0], enabled=False)


async def _enable(other: Context, hook_ids: list[str]) -> None:
    await _patch(other, hook_ids[1], enabled=True)


async def _rotate(other: Context, hook_ids: list[str]) -> None:
    await webhooks.rotate_secret(other, ORG, hook_ids[0])


async def _delete(other: Context, hook_ids: list[str]) -> None:
    await webhooks.delete_webhook(other, ORG, hook_ids.pop(0))


Change = Callable[[Context, list[str]], Awaitable[None]]


@pytest.mark.parametrize(
    "change",
    [_create, _update_filters, _update_url, _disable, _enable, _rotate, _delete],
    ids=lambda change: change.__name__.strip("_"),
)
async def test_every_change_in_another_process_is_seen_by_the_next_read(
    ctx: Context, other: Context, org: tuple[str, str], change: Change
) -> None:
    hook_ids = [await _hook(ctx, 0), await _hook(ctx, 1, enabled=False)]
    before = await _cached(ctx)
    assert await _cached(ctx) == before  # kept
    await change(other, hook_ids)
    after = await _cached(ctx)
    assert after != before
    assert after == await _stored(ctx)
    assert [hook.id for hook in after] == hook_ids


async def test_a_change_in_this_process_is_seen_too(ctx: Context, org: tuple[str, str]) -> None:
    hook_id = await _hook(ctx, 0)
    await _cached(ctx)
    await _patch(ctx, hook_id, regulations=["ccpa"])
    assert [hook.regulations for hook in await _cached(ctx)] == [["ccpa"]]


async def test_the_stamp_moves_with_each_change_and_only_then(
    ctx: Context, org: tuple[str, str]
) -> None:
    async def stamp() -> int | None:
        async with ctx.store.read() as tx:
            return (await webhook_versions.read(tx, ORG, None)).stamp

    assert await stamp() == 0
    hook_id = await _hook(ctx, 0)
    assert await stamp() == 1
    await users.create_user(ctx, ORG, UserIn(id="u1"))  # no webhook change: no new stamp
    assert await stamp() == 1
    await _patch(ctx, hook_id, enabled=False)
    await webhooks.delete_webhook(ctx, ORG, hook_id)
    assert await stamp() == 3


async def test_known_stamp_reads_no_webhooks(ctx: Context, org: tuple[str, str]) -> None:
    await _hook(ctx, 0)
    async with ctx.store.read() as tx:
        fresh = await webhook_versions.read(tx, ORG, None)
        again = await webhook_versions.read(tx, ORG, fresh.stamp)
        other_stamp = await webhook_versions.read(tx, ORG, 99)
    assert fresh.stamp == 1
    assert fresh.webhooks is not None
    assert len(fresh.webhooks) == 1
    assert again == (1, None)
    assert other_stamp == fresh


async def test_an_organization_without_its_row_is_read_every_time(ctx: Context) -> None:
    """No organization row (a webhook made below the API): nothing to stamp, nothing kept."""
    await _hook(ctx, 0)
    assert len(await _cached(ctx)) == 1
    await _hook(ctx, 1)
    assert len(await _cached(ctx)) == 2


# -- fan-out across processes ------------------------------------------------------------------


async def _write_user(ctx: Context, user_id: str) -> None:
    """A change on the outbox path (services.writes -> outbox.publish): user.created."""
    await users.create_user(ctx, ORG, UserIn(id=user_id))


async def _write_event(ctx: Context, user_id: str) -> None:
    """A consent event on the write path (services.ingest, group commit)."""
    data = {"user": {"id": user_id}, "consents": {"purposes": [{"id": "ads", "enabled": True}]}}
    await events.create_event(ctx, ORG, EventIn.model_validate(data))


async def _fanned_out_to(ctx: Context, hook_ids: list[str], user_id: str) -> set[str]:
    """The webhooks (of ``hook_ids``, deleted ones included) with a delivery for the user."""
    found = set()
    async with ctx.store.read() as tx:
        for hook_id in hook_ids:
            rows = await deliveries.list_for_webhook(
                tx, hook_id, status=None, after_pk=0, limit=1000
            )
            if any(row.user_id == user_id for row in rows):
                found.add(hook_id)
    return found


@pytest.mark.parametrize("write", [_write_user, _write_event], ids=["outbox", "ingest"])
async def test_fan_out_follows_webhook_changes_made_by_another_process(
    ctx: Context,
    other: Context,
    org: tuple[str, str],
    write: Callable[[Context, str], Awaitable[None]],
) -> None:
    seen: list[str] = []  # every webhook ever created

    async def step(user_id: str, expected: set[str]) -> None:
        await write(ctx, user_id)
        assert await _fanned_out_to(ctx, seen, user_id) == expected

    await step("u0", set())  # this process keeps the organization's (empty) list
    first = await _hook(other, 1)
    seen.append(first)
    await step("u1", {first})
    second = await _hook(other, 2)
    seen.append(second)
    await step("u2", {first, second})
    await _patch(other, first, regulations=["ccpa"])
    await step("u3", {second})
    await webhooks.delete_webhook(other, ORG, second)
    await step("u4", set())
    await _patch(other, first, regulations=["gdpr"])
    await step("u5", {first})


async def test_an_event_batch_with_the_kept_stamp_runs_no_webhook_statement(
    ctx: Context, other: Context, org: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write path's batch read brings the stamp (storage/write_batch.py): while it is the
    kept list's, fan-out reads nothing more; once another process changes the webhooks, the
    next batch reads them again, once."""
    hook = await _hook(ctx, 0)
    await _write_event(ctx, "u0")  # this process keeps the list of the current stamp
    reads = 0
    real = webhook_versions.read

    async def counting(tx: Tx, org_id: str, known: int | None) -> webhook_versions.Stamped:
        nonlocal reads
        reads += 1
        return await real(tx, org_id, known)

    monkeypatch.setattr(webhook_versions, "read", counting)
    await _write_event(ctx, "u1")
    await _write_event(ctx, "u2")
    assert reads == 0
    assert await _fanned_out_to(ctx, [hook], "u2") == {hook}
    second = await _hook(other, 1)
    await _write_event(ctx, "u3")
    assert reads == 1
    assert await _fanned_out_to(ctx, [hook, second], "u3") == {hook, second}
    await _write_event(ctx, "u4")
    assert reads == 1
