"""``consent-relay rotate-secret-key`` refuses while a real ``serve`` or ``worker`` process uses
the database (naming it), rotates anyway with ``--force`` (the running process then shows the
webhook as broken: it holds the old key), and rotates when nothing runs."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consent_relay import crypto
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn, WebhookIn
from consent_relay.security import webhook_secrets
from consent_relay.services import orgs, webhooks
from consent_relay.settings import Settings
from consent_relay.storage.records import WebhookRecord
from tests.e2e.helpers import CLI, READY, Process, free_port, process_env, wait_healthy


async def rotate(settings: Settings, old: str, new: str, *extra: str) -> tuple[int, str]:
    """The real command in a process of its own, the old key in CONSENT_RELAY_SECRET_KEY."""
    env = process_env(settings, CONSENT_RELAY_SECRET_KEY=old)
    done = await asyncio.to_thread(
        subprocess.run,
        [CLI, "rotate-secret-key", "--new-key", new, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


async def stored(ctx: Context, webhook_id: str) -> WebhookRecord:
    async with ctx.store.read() as tx:
        hook = await tx.get_webhook(None, webhook_id)
    assert hook is not None
    return hook


def opens(key: str, hook: WebhookRecord) -> bool:
    return webhook_secrets.broken_reason(crypto.SecretBox([key]), hook) is None


async def start(command: str, settings: Settings, tmp_path: Path) -> tuple[Process, int]:
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)] if command == "serve" else []
    process = Process(args or ["worker"], process_env(settings), tmp_path / f"{command}.log")
    process.start()
    if command == "worker":
        await process.printed(READY, within=30)
        return process, port

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:
        await wait_healthy(http, process)
    return process, port


async def shown_by_serve(port: int, api_key: str, webhook_id: str) -> tuple[str, float]:
    """The webhook's status in the running serve's API, and its broken-webhooks gauge."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        hook = await http.get(
            f"/v1/webhooks/{webhook_id}", headers={"Authorization": f"Bearer {api_key}"}
        )
        scraped = (await http.get("/metrics")).text
    gauge = [
        sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "consent_relay_webhooks_broken"
    ]
    return hook.json()["status"], gauge[0]


@pytest.mark.parametrize("command", ["serve", "worker"])
async def test_rotation_refused_while_a_process_runs_forced_and_then_free(
    ctx: Context, settings: Settings, tmp_path: Path, command: str
) -> None:
    # Set up through the services: an API client's own connections would use the database.
    api_key = (await orgs.create_organization(ctx, OrganizationIn(id="acme")))["api_key"]
    created = await webhooks.create_webhook(
        ctx,
        "acme",
        WebhookIn.model_validate({"url": "https://8.8.8.8/hook", "headers": {"X-Api-Key": "k"}}),
    )
    before = await stored(ctx, created["id"])
    first, second, third = settings.secret_key, crypto.new_key(), crypto.new_key()

    process, port = await start(command, settings, tmp_path)
    try:
        code, output = await rotate(settings, first, second)
        assert code == 1, output
        assert "the database is in use by" in output
        assert "--force" in output
        if ctx.store.is_sqlite:
            assert f"consent-relay {command} (pid {process.pid})" in output
        else:
            assert "PostgreSQL session pid" in output
        after = await stored(ctx, created["id"])
        assert (after.signing_secret, after.headers) == (before.signing_secret, before.headers)
        assert opens(first, after)

        # --force rotates while it runs: that process still holds the first key.
        code, output = await rotate(settings, first, second, "--force")
        assert code == 0, output
        assert "re-encrypted 2 secrets" in output  # the signing secret and the header value
        forced = await stored(ctx, created["id"])
        assert opens(second, forced)
        assert not opens(first, forced)
        if command == "serve":
            assert await shown_by_serve(port, api_key, created["id"]) == ("broken", 1)
    finally:
        assert await process.terminate() == 0, process.output()

    await ctx.store.engine.dispose()  # nothing of ours uses the database now
    code, output = await rotate(settings, second, third)
    assert code == 0, output
    assert "re-encrypted 2 secrets" in output
    rotated = await stored(ctx, created["id"])
    assert opens(third, rotated)
    assert not opens(second, rotated)
    assert crypto.SecretBox([third]).unseal(rotated.headers["X-Api-Key"]) == "k"
