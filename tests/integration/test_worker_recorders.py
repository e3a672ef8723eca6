"""How many batches a worker records at once: on PostgreSQL up to ``RECORDERS_PG``, each in a
transaction of its own, so a record waiting on the database (its round trips, a lock) does not
hold up the next batch's; on SQLite one at a time (its transactions take one lock in turn);
one at a time too for a worker that is one of several processes started together
(``worker.pg_recorders``: the machine's CPU bounds them, not the waits). A batch is taken
when a recorder is free, and shutdown waits for every record under way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from consent_relay import runner
from consent_relay.api.app import create_app
from consent_relay.delivery.worker import RECORDERS_PG
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import batches
from tests.e2e.helpers import consent_event, eventually, post_event
from tests.receiver import Receiver
from tests.workers import make_webhook, running


async def _consent(api: httpx.AsyncClient, user: str) -> None:
    await post_event(api, consent_event(user, "analytics", True))


async def _until(condition: Callable[[], bool], what: str) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check, within=15, interval=0.01, what=what)


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_held_record_holds_up_the_next_batch_unless_alone_on_postgres(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    processes: int,
) -> None:
    """One process on PostgreSQL records a second batch while the first waits; on SQLite,
    or as one of two processes, the next batch waits for the first."""
    assert RECORDERS_PG == 2
    one_at_a_time = ctx.store.is_sqlite or processes > 1
    await make_webhook(api, receiver.url(), event_types=["user.created"])
    gate = asyncio.Event()
    real = batches.record
    calls: list[int] = []  # results a record call was given, in the order the calls began
    finished: dict[int, int] = {}  # by the call's place in ``calls``: its results

    async def first_held(*args: Any, **kwargs: Any) -> batches.Recorded:
        call = len(calls)
        calls.append(len(args[1]))
        if call == 0:
            await gate.wait()  # the first record waits (on the database, say)
        done = await real(*args, **kwargs)
        finished[call] = len(args[1])
        return done

    monkeypatch.setattr(batches, "record", first_held)
    async with running(ctx, concurrency=4, processes=processes) as worker:
        await _consent(api, "first@example.com")
        await receiver.wait_for(1)
        await _until(lambda: len(calls) == 1, "the first record to begin")  # and wait
        for n in range(3):
            await _consent(api, f"next{n}@example.com")
        await receiver.wait_for(4)
        if one_at_a_time:
            # the three results wait for the one recorder
            await _until(
                lambda: len(worker._results) == 3 and not worker._in_flight, "three waiting"
            )
            assert calls == [1]
            assert finished == {}
        else:
            # a second recorder takes them and records them while the first still waits
            await _until(lambda: sum(finished.values()) == 3, "three recorded")
            assert calls[0] == 1
            assert sum(calls[1:]) == 3
            assert 0 not in finished
            assert worker.leases_held == 1  # the held record's delivery only
        gate.set()
        await _until(lambda: sum(finished.values()) == 4, "all four recorded")
        assert worker.leases_held == 0


async def test_shutdown_waits_for_every_record_under_way(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_webhook(api, receiver.url(), event_types=["user.created"])
    gate = asyncio.Event()
    real = batches.record
    finished: list[int] = []

    async def slow(*args: Any, **kwargs: Any) -> batches.Recorded:
        await gate.wait()
        done = await real(*args, **kwargs)
        finished.append(len(args[1]))
        return done

    monkeypatch.setattr(batches, "record", slow)
    async with running(ctx, concurrency=4) as worker:
        for n in range(3):
            await _consent(api, f"u{n}@example.com")
        await receiver.wait_for(3)
        # all sent: their records under way (or, past the recorders free, waiting for one)
        await _until(lambda: worker.sent == 3 and not worker._in_flight, "three sent")
        asyncio.get_running_loop().call_later(0.2, gate.set)  # opens while the worker stops
    assert sum(finished) == 3  # the stop waited for the records under way
    assert worker.leases_held == 0


@pytest.mark.parametrize("count", [1, 3])
async def test_serve_tells_its_own_worker_how_many_worker_processes_there_are(
    settings: Settings, ctx: Context, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """``serve --worker-processes N``: the API's in-process worker is one of N."""
    told: list[int] = []

    async def run(_ctx: Context, stop: asyncio.Event, *, processes: int = 1, **_: Any) -> None:
        told.append(processes)
        await stop.wait()

    monkeypatch.setattr(runner, "run", run)
    app = create_app(settings, ctx, workers=True, worker_processes=count)
    async with app.router.lifespan_context(app):
        await _until(lambda: told == [count], "the worker to start")
    assert told == [count]
