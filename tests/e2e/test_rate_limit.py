"""A webhook's rate limit holds across worker processes (issue 14): two ``consent-relay
worker`` processes against a counting receiver, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from aiohttp import web

from consent_relay.settings import Settings
from tests.e2e.helpers import (
    WorkerFleet,
    consent_event,
    eventually,
    make_webhook,
    post_event,
    process_env,
)
from tests.receiver import Received, Receiver

RATE = 20.0  # requests per second


async def test_rate_limit_holds_across_two_worker_processes(
    api: httpx.AsyncClient, settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    arrivals: list[float] = []

    def counting(_item: Received, _count: int) -> web.Response:
        arrivals.append(time.monotonic())
        return web.Response(status=204)

    receiver.behaviours["/limited"] = counting
    hook = await make_webhook(
        api, receiver.url("/limited"), event_types=["event.created"], rate_limit=RATE
    )
    assert hook["rate_limit"] == RATE
    for n in range(150):  # a user each: nothing but the limit holds them back
        await post_event(api, consent_event(f"u{n}@example.com", "analytics", True))
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = WorkerFleet(process_env(settings), logs, concurrency=20)
    fleet.spawn()
    fleet.spawn()
    try:

        async def enough() -> bool:
            fleet.check_alive()
            return len(arrivals) >= 120

        await eventually(enough, within=60, interval=0.05, what="120 deliveries")
    finally:
        await fleet.stop()
    # Over 100 requests (5 s at the limit), past the first ones (the bucket's burst).
    window = arrivals[110] - arrivals[10]
    measured = 100 / window
    assert 0.8 * RATE <= measured <= 1.2 * RATE, f"{measured:.1f} requests/s"
