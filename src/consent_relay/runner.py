"""Running workers: in ``serve`` beside the API, or alone in ``consent-relay worker``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence

from consent_relay import errors, gctune
from consent_relay.clock import Clock
from consent_relay.delivery import wakeup
from consent_relay.delivery.worker import Worker
from consent_relay.runtime import Context, build_context
from consent_relay.services import privacy as purge
from consent_relay.settings import Settings

CLOCK_SYNC_INTERVAL = 60.0
log = logging.getLogger("consent_relay.runner")


async def keep_clock_synced(ctx: Context, stop: asyncio.Event) -> None:
    """On PostgreSQL, re-read the database server's clock now and then."""
    clock = ctx.clock_ms
    if not isinstance(clock, Clock) or ctx.store.is_sqlite:
        return
    while not stop.is_set():
        try:
            await clock.sync(ctx.store)
        except errors.StorageUnavailable:
            log.warning("cannot read the database clock; keeping the last offset")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CLOCK_SYNC_INTERVAL)


async def run(
    ctx: Context, stop: asyncio.Event, *, concurrency: int | None = None, processes: int = 1
) -> None:
    """One worker (and, on PostgreSQL, its LISTEN connection and clock sync) until ``stop``;
    ``processes``: the worker processes started together, this one included."""
    tasks = [
        asyncio.create_task(Worker(ctx, concurrency=concurrency, processes=processes).run(stop)),
        asyncio.create_task(keep_clock_synced(ctx, stop)),
        asyncio.create_task(purge.run_periodically(ctx, stop)),  # retention and erasure
    ]
    if not ctx.store.is_sqlite:
        tasks.append(asyncio.create_task(wakeup.listen(ctx.store.url, ctx.work_queued, stop)))
    await asyncio.gather(*tasks)


async def run_process(
    settings: Settings,
    *,
    concurrency: int | None,
    on_ready: Callable[[], object],
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
    processes: int = 1,
) -> None:
    """A worker process's life: its database (migrated, waited for), ``on_ready`` once the
    stop signals are handled (before that a SIGTERM finds nothing to give back), then the
    worker until one of ``signals``. ``consent-relay worker`` and each supervised worker
    process (``processes.child_main``, one of ``processes``) run this."""
    ctx = build_context(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        if not await ctx.store.migrate_when_ready(stop):
            return
        on_ready()
        gctune.settle()  # the process's whole life from here on, as the API's (gctune.py)
        await run(ctx, stop, concurrency=concurrency, processes=processes)
    finally:
        await ctx.store.close()
