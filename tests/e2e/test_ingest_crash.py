"""Group commit under SIGKILL: every consent event the API acknowledged (201) is stored,
with its outbox, after the process is killed mid-load and the service comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from consent_relay.runtime import Context
from consent_relay.services import events
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from tests.e2e.helpers import (
    Process,
    consent_event,
    free_port,
    process_env,
    read,
    wait_healthy,
)

CLIENTS = 32


async def test_acknowledged_events_survive_a_kill_mid_batch(
    tmp_path: Path, settings: Settings, ctx: Context, org: tuple[str, str]
) -> None:
    org_id, api_key = org
    port = free_port()
    server = Process(
        ["serve", "--host", "127.0.0.1", "--port", str(port)],
        process_env(settings),
        tmp_path / "serve.log",
    ).start()
    acknowledged: list[str] = []
    sent = 0
    enough = asyncio.Event()

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    ) as http:
        await wait_healthy(http, server)
        response = await http.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/never"})
        assert response.status_code == 201, response.text

        async def client(n: int) -> None:
            nonlocal sent
            for k in range(10_000):
                event_id = f"evt-{n}-{k}"
                sent += 1
                try:
                    response = await http.post(
                        "/v1/consents/events",
                        json={**consent_event(f"user-{k % 7}", "p1", k % 2 == 0), "id": event_id},
                    )
                except httpx.TransportError:
                    return  # the process is gone: this request was never acknowledged
                assert response.status_code == 201, response.text
                acknowledged.append(event_id)
                if len(acknowledged) >= 300:
                    enough.set()

        clients = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
        await asyncio.wait_for(enough.wait(), timeout=60)
        await server.kill()  # requests in flight: some committed and unanswered, some not
        await asyncio.gather(*clients)

    assert sent > len(acknowledged)  # the kill did catch requests in flight
    stored = await events.list_events(ctx, org_id, limit=1000)
    ids = {e["id"] for e in stored["data"]}
    while stored["next_cursor"]:
        stored = await events.list_events(ctx, org_id, cursor=stored["next_cursor"], limit=1000)
        ids |= {e["id"] for e in stored["data"]}
    assert set(acknowledged) <= ids
    # Each stored event came with its outbox, in the same transaction: its event.created.
    created = await read(ctx, inspect.count_deliveries_of_type, org_id, "event.created")
    assert created == len(ids)
