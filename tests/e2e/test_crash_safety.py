"""Crash safety: real ``consent-relay worker`` processes SIGKILLed while events pour in lose
nothing, keep per-user order and duplicate only what was in flight; concurrent claimers never
send one attempt twice. On SQLite and PostgreSQL.

A killed worker's leased deliveries come back when their lease runs out (60 s by default).
Rather than wait for that, the test ends the lease of a killed worker at once, as the expiry
would: ``due_ms`` of the rows it leased goes to 0 (worker ids are ``<host>:<pid>:...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_relay.delivery.worker import Worker
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect, tamper
from consent_relay.storage.store import Store
from tests.e2e.helpers import (
    READY,
    Pour,
    WorkerFleet,
    consent_event,
    eventually,
    lease_prefix,
    leases_of,
    make_webhook,
    post_event,
    process_env,
    read,
)
from tests.receiver import Receiver

USERS = 50
EVENTS_PER_USER = 40  # 2,000 events, ~4,000 messages (event.created + user.updated)
CONCURRENCY = 20
MIN_KILLS = 3  # that hit a worker holding leases


@dataclass(frozen=True)
class Kill:
    pid: int
    events_created: int  # by then
    leases: int  # claimed, unrecorded deliveries it took down (expired at once)


@pytest.fixture
async def fleet(settings: Settings, store: Store, tmp_path: Path) -> AsyncIterator[WorkerFleet]:
    """Worker processes on the test's (migrated) database; stopped before the store closes."""
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = WorkerFleet(process_env(settings), logs, CONCURRENCY)
    try:
        yield workers
    finally:
        await workers.stop()


async def expire_leases_of(ctx: Context, pid: int) -> int:
    """What lease expiry would do for a dead worker: its leased deliveries fall due now."""
    async with ctx.store.write() as tx:
        return await tamper.expire_leases(tx, lease_prefix(pid))


async def test_no_message_lost_while_workers_are_killed(
    api: httpx.AsyncClient,
    ctx: Context,
    receiver: Receiver,
    fleet: WorkerFleet,
    db_url: str,
) -> None:
    started = time.monotonic()
    hook = await make_webhook(api, receiver.url("/crash"))
    fleet.spawn()
    fleet.spawn()

    pour = Pour(api, {f"user-{u}@example.com": [] for u in range(USERS)})
    pour.more(EVENTS_PER_USER)
    created = pour.created
    kills: list[Kill] = []
    rng = random.Random(7)

    def hits() -> int:
        return sum(k.leases > 0 for k in kills)

    try:
        while not pour.done or hits() < MIN_KILLS:
            assert pour.task is not None
            await asyncio.wait({pour.task}, timeout=rng.uniform(0.5, 1.0))
            fleet.check_alive()
            victim = fleet.oldest()
            await victim.printed(READY, within=30)  # never one still starting: it does no work

            async def busy(pid: int = victim.pid) -> bool:
                return await leases_of(ctx, pid) > 0

            # Kill it mid-work: once it holds leases (bounded: the queue may be empty by now).
            with contextlib.suppress(AssertionError):
                await eventually(busy, within=5, interval=0.02, what="the victim to claim work")
            if pour.done and not await busy():
                if hits() >= MIN_KILLS:
                    break  # enough kills hit work; the events were all created meanwhile
                if await pour.more_if_drained(ctx):
                    continue  # all delivered before enough kills hit work: more poured in
            await fleet.kill(victim)
            expired = await expire_leases_of(ctx, victim.pid)
            kills.append(Kill(victim.pid, pour.progress[0], expired))
            fleet.spawn()
        await pour.finish()  # re-raises a failed POST
    finally:
        await pour.stop()
    created_at = time.monotonic() - started
    total_events = sum(len(ids) for ids in created.values())
    assert total_events == USERS * pour.rounds >= USERS * EVENTS_PER_USER

    async def drained() -> bool:
        fleet.check_alive()
        return await read(ctx, inspect.count_undelivered, hook["id"]) == 0

    await eventually(drained, within=90, interval=0.1, what="every delivery delivered")

    # Every message of the organization went to this (only, unfiltered) webhook ...
    message_ids = {m["id"] for m in await read(ctx, inspect.rows, "messages")}
    delivered = await read(ctx, inspect.rows, "deliveries", webhook_id=hook["id"])
    assert {d["message_id"] for d in delivered} == message_ids
    assert {d["status"] for d in delivered} == {"delivered"}
    assert len(delivered) == len(message_ids) >= 2 * total_events - USERS

    # ... and arrived at least once: 0 lost.
    arrivals = receiver.at("/crash")
    arrived_ids = [r.headers["webhook-id"] for r in arrivals]
    lost = message_ids - set(arrived_ids)
    duplicates = len(arrived_ids) - len(set(arrived_ids))
    assert not lost, f"{len(lost)} messages never arrived"
    assert set(arrived_ids) == message_ids
    # Only a delivery leased by a killed worker can go out twice.
    in_flight_at_kills = sum(k.leases for k in kills)
    assert duplicates <= in_flight_at_kills, (duplicates, kills)

    # Per user, the first arrivals of event.created follow the creation order.
    first_seen: dict[str, list[str]] = {ouid: [] for ouid in created}
    for item in arrivals:
        body: dict[str, Any] = item.json
        if body["type"] == "event.created":
            entity = body["parameters"]["entity"]
            first_seen[entity["user"]["organization_user_id"]].append(entity["id"])
    for ouid, expected in created.items():
        assert list(dict.fromkeys(first_seen[ouid])) == expected, ouid

    print(
        f"\n[{'sqlite' if db_url.startswith('sqlite') else 'postgres'}] events={total_events} "
        f"batches={pour.batches} "
        f"messages={len(message_ids)} kills={len(kills)} "
        f"leases-at-kill={[k.leases for k in kills]} lost={len(lost)} "
        f"duplicates={duplicates} (leases at kills {in_flight_at_kills}, "
        f"kills x concurrency {len(kills) * CONCURRENCY}) "
        f"arrivals={len(arrived_ids)} created-in={created_at:.1f}s "
        f"total={time.monotonic() - started:.1f}s"
    )


async def test_concurrent_claimers_never_send_an_attempt_twice(
    api: httpx.AsyncClient, ctx: Context, settings: Settings, receiver: Receiver
) -> None:
    """Two workers, each with its own connection pool, drain 1,000 deliveries at once due:
    5 webhooks x 100 users x 2 events."""
    hooks = [
        await make_webhook(api, receiver.url(f"/once/{n}"), event_types=["event.created"])
        for n in range(5)
    ]
    for round_ in range(2):
        await asyncio.gather(
            *(
                post_event(api, consent_event(f"c{u}@example.com", "ads", round_ == 0))
                for u in range(100)
            )
        )
    hook_ids = [hook["id"] for hook in hooks]
    assert await read(ctx, inspect.count, "deliveries") == 1000

    other = Context(
        settings=settings, store=Store(settings.resolved_database_url, pool_size=5), box=ctx.box
    )
    workers = [
        Worker(ctx, concurrency=10, poll_interval=0.05, worker_id="claimer-a"),
        Worker(other, concurrency=10, poll_interval=0.05, worker_id="claimer-b"),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        await receiver.wait_for(1000, timeout=60)

        async def recorded() -> bool:
            return await read(ctx, inspect.count, "deliveries", status="delivered") == 1000

        await eventually(recorded, within=30, what="1,000 deliveries recorded")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await other.store.close()

    sent = [(r.path, r.headers["webhook-id"]) for r in receiver.received]
    assert len(sent) == 1000
    assert len(set(sent)) == 1000  # each (webhook, message) exactly once
    assert len({message_id for _path, message_id in sent}) == 200
    assert all(w.sent > 0 for w in workers), [w.sent for w in workers]
    assert sum(w.sent for w in workers) == 1000
    attempts = await read(ctx, inspect.attempts_of)  # (of deliveries that exist)
    webhook_of = {d["id"]: d["webhook_id"] for d in await read(ctx, inspect.rows, "deliveries")}
    assert {webhook_of[a["delivery_id"]] for a in attempts} == set(hook_ids)
    assert len(attempts) == 1000
    assert {(a["attempt_number"], a["outcome"]) for a in attempts} == {(1, "ok")}
