"""A receiver whose idle timeout ends a kept connection just as the next request goes out
(gunicorn's 2 s, uvicorn's, Node's and Apache's 5 s; tests/e2e/fault_server.py ``/impatient``
makes the race certain: it ends every kept connection unanswered at its next request).

Through the worker's direct client (README, "The delivery client") each delivery is one
successful attempt: the request left on a kept connection that ended before a byte of an
answer is sent again, in the same attempt, on a new connection. Nothing is recorded of the
ended one, and every delivery was answered by the receiver (after a 204, an answer ended by
the connection's close, the ended connection was once taken for an answer: the last one's,
and the delivery for delivered). Through aiohttp, which does not repeat a POST, the same
receiver costs failed attempts (E_CONNECTION) that the retry schedule then makes good.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from consent_relay.delivery import outcome
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from tests.e2e.fault_server import FaultServer
from tests.e2e.helpers import consent_event, eventually, make_webhook, post_event, read, running

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

USERS = 4
ROUNDS = 5  # events a user, one at a time in order: each after the last was delivered


@pytest.fixture
async def fault() -> AsyncIterator[FaultServer]:
    async with FaultServer() as server:
        yield server


async def _drain(api: httpx.AsyncClient, ctx: Context, fault: FaultServer) -> list[dict[str, Any]]:
    """Every user's events posted round after round, each round delivered before the next
    (so that each delivery finds the connection the last one kept): the webhook's attempts."""
    hook = (await make_webhook(api, fault.url("/impatient")))["id"]
    async with running(ctx):
        for round_ in range(ROUNDS):
            for user in range(USERS):
                await post_event(api, consent_event(f"k{user}@example.com", "ads", round_ % 2 == 0))
            expected = 2 * USERS * (round_ + 1)  # event.created and user.created / updated

            async def delivered(expected: int = expected) -> bool:
                count = await read(
                    ctx, inspect.count, "deliveries", webhook_id=hook, status="delivered"
                )
                return bool(count >= expected)

            await eventually(delivered, within=30, interval=0.02, what=f"round {round_}")
    attempts: list[dict[str, Any]] = await read(ctx, inspect.attempts_of, webhook_id=hook)
    return attempts


async def test_a_kept_connection_ended_unanswered_costs_no_attempt(
    api: httpx.AsyncClient, ctx: Context, fault: FaultServer
) -> None:
    attempts = await _drain(api, ctx, fault)
    deliveries = 2 * USERS * ROUNDS
    assert {(a["outcome"], a["status_code"]) for a in attempts} == {(outcome.OK, 204)}
    assert len(attempts) == deliveries  # one attempt a delivery, each the first
    assert {a["attempt_number"] for a in attempts} == {1}
    # Each delivery was answered by the receiver, once: none recorded on the strength of the
    # last answer on a connection that ended unanswered (as after a 204 it once was).
    assert fault.answered["/impatient"] == deliveries
    # The race happened: requests the receiver read and ended unanswered, sent again.
    assert fault.hits["/impatient"] > deliveries


class TestThroughAiohttp:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"delivery_client": "aiohttp"})

    async def test_the_same_race_is_a_failed_attempt_there(
        self, api: httpx.AsyncClient, ctx: Context, fault: FaultServer
    ) -> None:
        attempts = await _drain(api, ctx, fault)
        failed = [a for a in attempts if a["outcome"] != outcome.OK]
        assert failed, "aiohttp repeats no POST: the race must show as failed attempts"
        assert {a["outcome"] for a in failed} == {outcome.E_CONNECTION}
