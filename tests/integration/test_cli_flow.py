"""The operator commands of issue 14: ``webhooks set`` (rate limit, automatic replay,
enabling) and ``dead-letters replay --force``."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from consent_relay.cli import app
from consent_relay.settings import Settings
from consent_relay.storage import inspect, tamper
from consent_relay.storage.store import Store
from tests.integration.test_cli import _env, _three_dead_letters


def test_webhooks_set_changes_the_flow_settings(settings: Settings) -> None:
    webhook_id = asyncio.run(_three_dead_letters(settings))
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, ["webhooks", "set", webhook_id, *args], env=_env(settings))
        return result.exit_code, result.output

    code, output = run("--rate-limit", "2.5", "--no-auto-replay")
    assert code == 0, output
    shown = json.loads(output)
    assert (shown["rate_limit"], shown["auto_replay"]) == (2.5, False)
    code, output = run("--rate-limit", "0", "--auto-replay", "--enable")
    assert code == 0, output
    shown = json.loads(output)
    assert (shown["rate_limit"], shown["auto_replay"], shown["enabled"]) == (None, True, True)
    code, output = run("--rate-limit", "-3")
    assert code == 2, output
    code, output = run()
    assert code == 2, output


async def _supersede_one(settings: Settings) -> str:
    store = Store(settings.resolved_database_url)
    try:
        async with store.write() as tx:
            first = (await inspect.rows(tx, "deliveries", status="dead"))[0]["id"]
            await tamper.set_delivery_status(tx, "superseded", ids=[first])
        return str(first)
    finally:
        await store.close()


def test_replay_of_a_superseded_dead_letter_needs_force(settings: Settings) -> None:
    webhook_id = asyncio.run(_three_dead_letters(settings))
    superseded = asyncio.run(_supersede_one(settings))
    runner = CliRunner()
    replay = ["dead-letters", "replay", webhook_id, "--id", superseded]
    refused = runner.invoke(app, replay, env=_env(settings))
    assert refused.exit_code == 1, refused.output
    assert "superseded" in refused.output
    bulk = runner.invoke(app, ["dead-letters", "replay", webhook_id], env=_env(settings))
    assert "replayed 2 dead letters" in bulk.output, bulk.output
    forced = runner.invoke(app, [*replay, "--force"], env=_env(settings))
    assert forced.exit_code == 0, forced.output
    assert "replayed 1 dead letters" in forced.output
