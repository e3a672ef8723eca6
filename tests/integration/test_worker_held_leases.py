"""How far a worker claims ahead of its recorder: at most ``LEASES_PER_SLOT`` leases a slot
of ``concurrency``, in flight or sent and waiting for their record (the pipeline's slack
while the recorder writes one batch at a time), and not one more."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from consent_relay.delivery.worker import LEASES_PER_SLOT
from consent_relay.runtime import Context
from consent_relay.storage import batches, inspect
from tests.receiver import Receiver
from tests.workers import make_webhook, running

CONCURRENCY = 3
USERS = 20  # a due head each: more than the worker may hold


async def _leased(ctx: Context) -> int:
    async with ctx.store.read() as tx:
        return sum(1 for q in await inspect.rows(tx, "delivery_queues") if q["lease_owner"])


async def test_a_worker_holds_four_leases_a_slot_while_its_record_waits(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # twice the slots left a PostgreSQL worker waiting (docs/performance-log.md)
    assert LEASES_PER_SLOT == 4
    await make_webhook(api, receiver.url(), event_types=["user.created"])
    for n in range(USERS):
        response = await api.post(
            "/v1/consents/events",
            json={
                "user": {"organization_user_id": f"u{n}@example.com"},
                "consents": {"purposes": [{"id": "analytics", "enabled": True}]},
            },
        )
        assert response.status_code == 201, response.text
    gate = asyncio.Event()
    real = batches.record

    async def held_back(*args: Any, **kwargs: Any) -> batches.Recorded:
        await gate.wait()  # the recorder is slow: nothing is recorded until the gate opens
        return await real(*args, **kwargs)

    monkeypatch.setattr(batches, "record", held_back)
    most = LEASES_PER_SLOT * CONCURRENCY
    async with running(ctx, concurrency=CONCURRENCY) as worker:
        await receiver.wait_for(most, timeout=15)  # each leased before it was sent
        assert not await worker._claim_and_start()  # no room: it claims nothing more
        assert len(receiver.received) == most == worker.leases_held == await _leased(ctx)
        gate.set()  # recorded, the rest goes out
        await receiver.wait_for(USERS)
    assert len(receiver.received) == USERS
