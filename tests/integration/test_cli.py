"""The operator commands, through typer's runner, against the test databases."""

from __future__ import annotations

import asyncio

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
from tests.conftest import prepare_store


async def _fresh(settings: Settings) -> None:
    store = Store(settings.resolved_database_url)
    try:
        await prepare_store(store)
    finally:
        await store.close()


def _env(settings: Settings) -> dict[str, str]:
    return {
        "COLUMNS": "250",  # wide enough that tables print whole ids
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
            await events.create_event(
                ctx, "acme", EventIn.model_validate({"user": {"organization_user_id": f"u{n}"}})
            )
        async with store.write() as tx:
            first_three = [row["id"] for row in await inspect.rows(tx, "deliveries")][:3]
            await tamper.make_dead_letters(tx, first_three, attempt_count=6, last_outcome="E_HTTP")
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


def test_webhooks_list_show_and_test(settings: Settings) -> None:
    webhook_id = asyncio.run(_three_dead_letters(settings))
    runner = CliRunner()
    listed = runner.invoke(app, ["webhooks", "list", "--org", "acme"], env=_env(settings))
    assert listed.exit_code == 0, listed.output
    assert webhook_id in listed.output
    shown = runner.invoke(app, ["webhooks", "show", webhook_id], env=_env(settings))
    assert shown.exit_code == 0, shown.output
    assert "dead letters not replayed: 3" in shown.output
    assert "signing_secret" not in shown.output
    tested = runner.invoke(
        app, ["webhooks", "test", webhook_id, "--type", "user.deleted"], env=_env(settings)
    )
    assert tested.exit_code == 0, tested.output
    assert "queued user.deleted as delivery dlv_" in tested.output
    wrong = runner.invoke(
        app, ["webhooks", "test", webhook_id, "--type", "user.exploded"], env=_env(settings)
    )
    assert wrong.exit_code == 2
    assert "--type must be one of" in wrong.output


def test_keys_list_shows_prefixes_not_keys(settings: Settings) -> None:
    asyncio.run(_fresh(settings))
    runner = CliRunner()
    created = runner.invoke(app, ["orgs", "create", "acme"], env=_env(settings))
    key = created.output.split("API key (shown once): ")[1].strip()
    listed = runner.invoke(app, ["keys", "list", "acme"], env=_env(settings))
    assert listed.exit_code == 0, listed.output
    assert key[:12] in listed.output
    assert key not in listed.output
