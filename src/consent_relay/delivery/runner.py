"""Running workers: in ``serve`` beside the API, or alone in ``consent-relay worker``."""

from __future__ import annotations

import asyncio

from consent_relay.delivery import wakeup
from consent_relay.delivery.worker import Worker
from consent_relay.services.context import Context


async def run(ctx: Context, stop: asyncio.Event, *, concurrency: int | None = None) -> None:
    """One worker (and, on PostgreSQL, its LISTEN connection) until ``stop`` is set."""
    tasks = [asyncio.create_task(Worker(ctx, concurrency=concurrency).run(stop))]
    if not ctx.store.is_sqlite:
        tasks.append(asyncio.create_task(wakeup.listen(ctx.store.url, ctx.work_queued, stop)))
    await asyncio.gather(*tasks)
