"""``consent-relay ledger verify|export`` and ``users erase`` through typer's runner, on
SQLite and PostgreSQL: verify catches a changed, a removed and a reordered entry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

import orjson
import pytest
from typer.testing import CliRunner

from consent_relay import crypto
from consent_relay.cli import app
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, OrganizationIn, WebhookIn
from consent_relay.services import events, orgs, webhooks
from consent_relay.settings import Settings
from consent_relay.storage import inspect, tamper
from consent_relay.storage.store import Store
from consent_relay.storage.tx import Tx
from tests.conftest import prepare_store
from tests.e2e.helpers import eventually, read
from tests.receiver import Receiver
from tests.workers import running

ENTRIES = 6  # three users, two messages each (event.created, user.created)


def _env(settings: Settings) -> dict[str, str]:
    return {
        "COLUMNS": "250",
        "CONSENT_RELAY_DATABASE_URL": settings.resolved_database_url,
        "CONSENT_RELAY_DATA_DIR": str(settings.data_dir),
        "CONSENT_RELAY_SECRET_KEY": settings.secret_key,
    }


async def _with_ctx(settings: Settings, work: Callable[[Context], Awaitable[None]]) -> None:
    store = Store(settings.resolved_database_url)
    ctx = Context(settings=settings, store=store, box=crypto.SecretBox([settings.secret_key]))
    try:
        await work(ctx)
    finally:
        await store.close()


async def _delivered_ledger(settings: Settings) -> None:
    """Three users' messages delivered to a real receiver: six ledger entries."""
    store = Store(settings.resolved_database_url)
    await prepare_store(store)
    await store.close()

    async def work(ctx: Context) -> None:
        receiver = await Receiver().start()
        try:
            await orgs.create_organization(ctx, OrganizationIn(id="acme"))
            await webhooks.create_webhook(
                ctx, "acme", WebhookIn.model_validate({"url": receiver.url()})
            )
            for n in range(3):
                await events.create_event(
                    ctx,
                    "acme",
                    EventIn.model_validate({"user": {"organization_user_id": f"u{n}@x.test"}}),
                )
            async with running(ctx):

                async def all_in() -> bool:
                    return await read(ctx, inspect.count, "ledger_entries") == ENTRIES

                await eventually(all_in, within=20, what="six ledger entries")
        finally:
            await receiver.stop()

    await _with_ctx(settings, work)


async def _tamper(settings: Settings, damage: Callable[[Tx], Awaitable[None]]) -> None:
    async def work(ctx: Context) -> None:
        async with ctx.store.write() as tx:
            await damage(tx)

    await _with_ctx(settings, work)


# The damage done to the ledger, the entry verify names, and the words it uses.
TAMPERINGS: dict[str, tuple[Callable[[Tx], Awaitable[None]], int, str]] = {
    "changed": (partial(tamper.change_ledger_status_code, seq=3, status_code=500), 3, "changed"),
    "removed": (partial(tamper.delete_ledger_entry, seq=3), 4, "missing"),
    "reordered": (partial(tamper.swap_ledger_entries, first=3, second=4), 3, "removed or moved"),
    "last removed": (partial(tamper.delete_ledger_entry, seq=6), 6, "removed from the end"),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_ledger_verify_names_the_first_broken_entry(settings: Settings, tampering: str) -> None:
    asyncio.run(_delivered_ledger(settings))
    runner = CliRunner()
    intact = runner.invoke(app, ["ledger", "verify"], env=_env(settings))
    assert intact.exit_code == 0, intact.output
    assert f"{ENTRIES} entries, chain intact" in intact.output

    damage, seq, words = TAMPERINGS[tampering]
    asyncio.run(_tamper(settings, damage))
    broken = runner.invoke(app, ["ledger", "verify"], env=_env(settings))
    assert broken.exit_code == 1, broken.output
    assert f"organization acme: entry {seq}:" in broken.output
    assert words in broken.output
    assert "chain intact" not in broken.output


def test_ledger_export_writes_ndjson(settings: Settings) -> None:
    asyncio.run(_delivered_ledger(settings))
    runner = CliRunner()
    exported = runner.invoke(app, ["ledger", "export"], env=_env(settings))
    assert exported.exit_code == 0, exported.output
    lines = [orjson.loads(line) for line in exported.stdout.splitlines() if line.startswith("{")]
    assert [e["seq"] for e in lines] == list(range(1, ENTRIES + 1))
    assert all(e["organization_id"] == "acme" for e in lines)
    assert set(lines[0]) >= {"seq", "message_id", "payload_sha256", "prev_hash", "entry_hash"}
    later = runner.invoke(
        app, ["ledger", "export", "--since", lines[-1]["delivered_at"]], env=_env(settings)
    )
    assert later.exit_code == 0, later.output
    assert 1 <= sum(1 for line in later.stdout.splitlines() if line.startswith("{")) <= ENTRIES
    future = runner.invoke(app, ["ledger", "export", "--since", "2999-01-01"], env=_env(settings))
    assert future.exit_code == 0
    assert not [line for line in future.stdout.splitlines() if line.startswith("{")]
    bad = runner.invoke(app, ["ledger", "export", "--since", "soon"], env=_env(settings))
    assert bad.exit_code != 0
    assert "--since" in bad.output


def test_users_erase_purges_what_a_deleted_user_left(settings: Settings) -> None:
    asyncio.run(_delivered_ledger(settings))

    async def user_id(ctx: Context) -> None:
        found = (await read(ctx, inspect.rows, "messages"))[0]["user_id"]
        ids.append(str(found))

    ids: list[str] = []
    asyncio.run(_with_ctx(settings, user_id))
    runner = CliRunner()
    erased = runner.invoke(app, ["users", "erase", ids[0], "--org", "acme"], env=_env(settings))
    assert erased.exit_code == 0, erased.output
    assert f"user {ids[0]} erased" in erased.output

    reasons: list[str] = []

    async def purged(ctx: Context) -> None:
        found = await read(ctx, inspect.count_erased_messages, ids[0])
        reasons.append(str(found))

    asyncio.run(_with_ctx(settings, purged))
    assert reasons == ["2"]
    # Erasing again (the user is gone now) still works and finds nothing more to purge.
    again = runner.invoke(app, ["users", "erase", ids[0], "--org", "acme"], env=_env(settings))
    assert again.exit_code == 0, again.output
    assert "0 more payloads" in again.output
