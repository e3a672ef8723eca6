"""Shared test helpers: an in-process worker, and creating webhooks through the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from consent_relay.delivery.worker import Worker
from consent_relay.runtime import Context


@contextlib.asynccontextmanager
async def running(ctx: Context, **kwargs: Any) -> AsyncIterator[Worker]:
    """One in-process worker on ``ctx`` until the block ends (then a graceful stop).
    Jitter is off (``rand`` 0.5) so retry timing is exact."""
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("rand", lambda: 0.5)
    worker = Worker(ctx, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def make_webhook(api: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    """Create a webhook through the API; the answer includes its signing secret."""
    response = await api.post("/v1/webhooks", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
