"""How many batches a worker records at once: on PostgreSQL up to ``RECORDERS_PG``, each in a
transaction of its own, so a record waiting on the database (its round trips, a lock) does not
hold up the next batch's; on SQLite one at a time (its transactions take one lock in turn).
A batch is taken when a recorder is free, and shutdown waits for every record under way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from consent_relay.delivery.worker import RECORDERS_PG
from consent_relay.runtime import Context
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


async def test_a_held_record_holds_up_the_next_batch_on_sqlite_only(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert RECORDERS_PG == 2
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
    async with running(ctx, concurrency=4) as worker:
        await _consent(api, "first@example.com")
        await receiver.wait_for(1)
        await _until(lambda: len(calls) == 1, "the first record to begin")  # and wait
        for n in range(3):
            await _consent(api, f"next{n}@example.com")
        await receiver.wait_for(4)
        if ctx.store.is_sqlite:
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
