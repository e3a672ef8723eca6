"""The operator commands, through typer's runner, against the test databases."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from consent_relay import crypto
from consent_relay.cli import app
from consent_relay.schemas import EventIn, OrganizationIn, WebhookIn
from consent_relay.services import consents, orgs, webhooks
from consent_relay.services.context import Context
from consent_relay.settings import Settings
from consent_relay.storage.store import Store
from consent_relay.storage.tables import deliveries
from tests.conftest import prepare_store


async def _fresh(settings: Settings) -> None:
    store = Store(settings.resolved_database_url)
    try:
        await prepare_store(store)
    finally:
        await store.close()


def _env(settings: Settings) -> dict[str, str]:
    return {
        "CONSENT_RELAY_DATABASE_URL": settings.resolved_database_url,
        "CONSENT_RELAY_DATA_DIR": str(settings.data_dir),
        "CONSENT_RELAY_SECRET_KEY": settings.secret_key,
    }


async def _three_dead_letters(settings: Settings) -> str:
    store = Store(settings.resolved_database_url)
    await prepare_store(store)
    ctx = Context(settings=settings, store=store, box=crypto.SecretBox([settings.secret_key]))
    try:
        await orgs.create_organization(ctx, OrganizationIn(id="acme"))
        hook = await webhooks.create_webhook(
            ctx, "acme", WebhookIn.model_validate({"url": "http://127.0.0.1:9/x"})
        )
        for n in range(3):
            await consents.create_event(
                ctx, "acme", EventIn.model_validate({"user": {"organization_user_id": f"u{n}"}})
            )
        async with store.write() as tx:
            await tx.conn.execute(
                update(deliveries)
                .where(deliveries.c.message_id.in_(select(deliveries.c.message_id).limit(3)))
                .values(status="dead", due_ms=None, attempt_count=6, last_outcome="E_HTTP")
            )
        return str(hook["id"])
    finally:
        await store.close()


def test_dead_letters_list_and_replay(settings: Settings) -> None:
    webhook_id = asyncio.run(_three_dead_letters(settings))
    runner = CliRunner()
    listed = runner.invoke(app, ["dead-letters", "list", webhook_id], env=_env(settings))
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("dlv_") == 3
    replayed = runner.invoke(app, ["dead-letters", "replay", webhook_id], env=_env(settings))
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 3 dead letters" in replayed.output
    again = runner.invoke(app, ["dead-letters", "replay", webhook_id], env=_env(settings))
    assert "replayed 0 dead letters" in again.output


def test_unknown_webhook_is_a_clear_error(settings: Settings) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["dead-letters", "list", "wh_nope"], env=_env(settings))
    assert result.exit_code == 1
    assert "no webhook 'wh_nope'" in result.output


@pytest.mark.parametrize("org_id", ["acme", "beta-2"])
def test_orgs_create_prints_a_working_key(settings: Settings, org_id: str) -> None:
    asyncio.run(_fresh(settings))
    runner = CliRunner()
    result = runner.invoke(app, ["orgs", "create", org_id], env=_env(settings))
    assert result.exit_code == 0, result.output
    key = result.output.split("API key (shown once): ")[1].strip()
    assert key.startswith("crk_")
    bad = runner.invoke(app, ["orgs", "create", "Bad Id"], env=_env(settings))
    assert bad.exit_code == 1
    assert "invalid organization id" in bad.output
