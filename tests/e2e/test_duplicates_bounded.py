"""Duplicates stay bounded: two ``consent-relay worker`` processes on PostgreSQL, one of them
SIGKILLed every few seconds (and replaced) while events pour in. Nothing is lost, and no
more messages arrive twice than the killed workers held leased (claimed, unrecorded) when
they died.

Leases run out by themselves here (the shortest lease the settings allow: two request
timeouts plus the connect timeout, 5 s), nothing is backdated. The leases a killed worker
held are counted right after the kill: until they run out nobody else may take them.
``CONSENT_RELAY_LONG_TESTS=1`` runs 10,000 events instead of 1,500.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from consent_relay.storage.store import Store
from tests.e2e.helpers import (
    READY,
    Pour,
    WorkerFleet,
    eventually,
    leases_of,
    make_webhook,
    process_env,
    read,
)
from tests.receiver import Receiver

LONG = os.environ.get("CONSENT_RELAY_LONG_TESTS") == "1"
USERS = 50
EVENTS = 10_000 if LONG else 1_500
CONCURRENCY = 20  # per worker process
KILL_EVERY = (2.0, 3.5)  # seconds, drawn uniformly
MIN_KILLS_IN_FLIGHT = 3  # kills that took leased deliveries down with them

pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


@dataclass(frozen=True)
class Kill:
    pid: int
    at: float  # seconds into the run
    events_created: int  # by then
    leases: int  # deliveries it held leased when it died


@pytest.fixture
async def fleet(settings: Settings, store: Store, tmp_path: Path) -> AsyncIterator[WorkerFleet]:
    logs = tmp_path / "logs"
    logs.mkdir()
    env = process_env(settings, CONSENT_RELAY_LEASE_SECONDS="1")
    workers = WorkerFleet(env, logs, CONCURRENCY)
    try:
        yield workers
    finally:
        await workers.stop()


async def test_duplicates_at_most_the_deliveries_in_flight_at_the_kills(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, fleet: WorkerFleet
) -> None:
    started = time.monotonic()
    hook = await make_webhook(api, receiver.url("/dup"))
    fleet.spawn()
    fleet.spawn()
    pour = Pour(api, {f"dup-{u}@example.com": [] for u in range(USERS)})
    pour.more(EVENTS // USERS)
    kills: list[Kill] = []
    rng = random.Random(11)

    def hits() -> int:
        return sum(k.leases > 0 for k in kills)

    try:
        while not pour.done or hits() < MIN_KILLS_IN_FLIGHT:
            assert pour.task is not None
            await asyncio.wait({pour.task}, timeout=rng.uniform(*KILL_EVERY))
            fleet.check_alive()
            if pour.done:
                if hits() >= MIN_KILLS_IN_FLIGHT:
                    break  # enough kills hit work; the events were all created meanwhile
                if await pour.more_if_drained(ctx):
                    continue  # all delivered before enough kills hit work: more poured in
            victim = fleet.oldest()
            # Only a worker that got to work: on a loaded machine start-up can outlast a
            # kill interval, and killing workers still starting would deliver nothing at all.
            await victim.printed(READY, within=30)
            if pour.done:
                # No more events pour in, and the loop no longer waits between kills: killed
                # at once, each replacement died before it claimed anything, and the kills
                # never hit work again (the loop spun until the timeout, seen once delivery
                # got faster). So kill it once it holds leases (bounded).
                async def busy(pid: int = victim.pid) -> bool:
                    return await leases_of(ctx, pid) > 0

                with contextlib.suppress(AssertionError):
                    await eventually(busy, within=5, interval=0.02, what="the victim to claim")
            await fleet.kill(victim)
            leases = await leases_of(ctx, victim.pid)
            kills.append(Kill(victim.pid, time.monotonic() - started, pour.progress[0], leases))
            fleet.spawn()
        await pour.finish()  # re-raises a failed POST
    finally:
        await pour.stop()
    created = pour.created
    total_events = sum(len(ids) for ids in created.values())
    assert total_events == USERS * pour.rounds >= EVENTS

    async def drained() -> bool:
        fleet.check_alive()
        left = await read(ctx, inspect.count_undelivered)
        return int(left) == 0

    await eventually(drained, within=120, interval=0.2, what="every delivery delivered")

    message_ids = {m["id"] for m in await read(ctx, inspect.rows, "messages")}
    delivered = await read(ctx, inspect.rows, "deliveries", webhook_id=hook["id"])
    assert {d["message_id"] for d in delivered} == message_ids
    arrivals = receiver.at("/dup")
    arrived = [r.headers["webhook-id"] for r in arrivals]
    lost = message_ids - set(arrived)
    duplicates = len(arrived) - len(set(arrived))
    in_flight = sum(k.leases for k in kills)
    failed_attempts = await read(ctx, inspect.count_failed_attempts)
    print(
        f"\n[duplicates] events={total_events} batches={pour.batches} messages={len(message_ids)} "
        f"kills={len(kills)} "
        f"leases-at-kills={[k.leases for k in kills]} (sum {in_flight}) lost={len(lost)} "
        f"duplicates={duplicates} arrivals={len(arrived)} failed-attempts={failed_attempts} "
        f"total={time.monotonic() - started:.1f}s"
    )
    assert not lost, f"{len(lost)} messages never arrived"
    assert duplicates <= in_flight, (duplicates, kills)

    # Per user, first arrivals follow the creation order.
    first_seen: dict[str, list[str]] = {ouid: [] for ouid in created}
    for item in arrivals:
        body: dict[str, Any] = item.json
        if body["type"] == "event.created":
            entity = body["parameters"]["entity"]
            first_seen[entity["user"]["organization_user_id"]].append(entity["id"])
    for ouid, expected in created.items():
        assert list(dict.fromkeys(first_seen[ouid])) == expected, ouid
