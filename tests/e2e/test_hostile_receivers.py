"""Hostile receivers (tests/e2e/fault_server.py): a receiver that never answers, trickles one
byte a second, resets the connection, answers 10 MB, speaks something that is not HTTP,
redirects to a loopback URL or answers 410. Each attempt ends within its deadline with the
right outcome code, memory stays bounded, and a healthy webhook's deliveries finish while
the hostile ones hang.

The worker runs in this process (so its memory is this process's RSS); the database is
SQLite: nothing here depends on it. ``CONSENT_RELAY_LONG_TESTS=1`` scales the sizes up.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_relay.delivery import outcome
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from tests.e2e.fault_server import FaultServer
from tests.e2e.helpers import (
    consent_event,
    eventually,
    make_webhook,
    post_event,
    read,
    running,
)
from tests.receiver import Receiver

LONG = os.environ.get("CONSENT_RELAY_LONG_TESTS") == "1"
SLACK_MS = 1000  # the event loop's own lateness on a busy machine, on top of the deadline
MAX_RSS_GROWTH = 50 * 1024 * 1024

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class Expect:
    code: str
    status: int | None


# path -> what every attempt against it must come to
HOSTILE: dict[str, Expect] = {
    "/never": Expect(outcome.E_TIMEOUT, None),
    "/trickle-head": Expect(outcome.E_TIMEOUT, None),
    "/trickle-body": Expect(outcome.E_TIMEOUT, None),
    "/reset": Expect(outcome.E_CONNECTION, None),
    "/split": Expect(outcome.OK, 200),
    "/huge": Expect(outcome.OK, 200),
    "/garbage": Expect(outcome.E_CONNECTION, None),
    "/redirect": Expect(outcome.E_HTTP, 302),
    "/gone": Expect(outcome.E_HTTP, 410),
}
HANGING = ("/never", "/trickle-head", "/trickle-body")
FAST_FAILING = ("/reset", "/garbage", "/redirect")  # a 410 disables its webhook (issue 14)


@pytest.fixture
async def fault() -> AsyncIterator[FaultServer]:
    async with FaultServer(trickle_interval=1.0) as server:
        yield server


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def attempts_of(ctx: Context, webhook_id: str) -> list[dict[str, Any]]:
    return await read(ctx, inspect.attempts_of, webhook_id=webhook_id)


async def count_status(ctx: Context, webhook_id: str, status: str) -> int:
    return await read(ctx, inspect.count, "deliveries", webhook_id=webhook_id, status=status)


async def create_events(api: httpx.AsyncClient, users: int, rounds: int, prefix: str) -> int:
    """``rounds`` events per user (the first creates the user): 2 messages per event."""
    for round_ in range(rounds):
        for user in range(users):
            ouid = f"{prefix}{user}@example.com"
            await post_event(api, consent_event(ouid, "ads", round_ % 2 == 0))
    return users * rounds


class TestOutcomes:
    USERS = 60 if LONG else 20
    ROUNDS = 2

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={"request_timeout": 2.0, "connect_timeout": 1.0, "lease_seconds": 1.0}
        )

    async def test_each_hostile_receiver_gets_its_outcome_within_the_deadline(
        self, api: httpx.AsyncClient, ctx: Context, fault: FaultServer
    ) -> None:
        hooks = {path: (await make_webhook(api, fault.url(path)))["id"] for path in HOSTILE}
        events = await create_events(api, self.USERS, self.ROUNDS, "h")
        per_hook = 2 * events  # event.created + user.created/updated
        deadline_ms = ctx.settings.request_timeout * 1000
        rss_before = rss_bytes()
        started = time.monotonic()

        async def settled() -> bool:
            for path in FAST_FAILING:  # six attempts each, then dead
                if await count_status(ctx, hooks[path], "dead") < per_hook:
                    return False
            for path in ("/huge", "/split"):
                if await count_status(ctx, hooks[path], "delivered") < per_hook:
                    return False
            for path in HANGING:  # every queue head's first attempt, at least
                if len(await attempts_of(ctx, hooks[path])) < self.USERS:
                    return False
            [gone] = await read(ctx, inspect.rows, "webhooks", id=hooks["/gone"])
            return not gone["enabled"]  # the 410 disabled it

        async with running(ctx):
            await eventually(settled, within=60, interval=0.1, what="the hostile attempts")
            rss_growth = rss_bytes() - rss_before
            elapsed = time.monotonic() - started
            found = {path: await attempts_of(ctx, hook) for path, hook in hooks.items()}

        summary = {path: len(attempts) for path, attempts in found.items()}
        wrong: list[str] = []  # every broken expectation, reported together
        for path, attempts in found.items():
            expect = HOSTILE[path]
            got = {(a["outcome"], a["status_code"]) for a in attempts}
            if got != {(expect.code, expect.status)}:
                wrong.append(f"{path}: outcomes {got}, expected {expect}; e.g. {attempts[0]}")
            late = [a["duration_ms"] for a in attempts if a["duration_ms"] > deadline_ms + SLACK_MS]
            if late:
                wrong.append(f"{path}: {len(late)} attempts outlived the deadline: {late[:5]}")
            if expect.code == outcome.E_TIMEOUT:  # cut at the deadline, not before
                early = [a["duration_ms"] for a in attempts if a["duration_ms"] < deadline_ms - 50]
                if early:
                    wrong.append(f"{path}: {len(early)} attempts ended early: {early[:5]}")
        for path in FAST_FAILING:
            if {a["attempt_number"] for a in found[path]} != set(range(1, 7)):
                wrong.append(f"{path}: not six attempts per delivery")
        # A body that came in two parts is kept whole; 10 MB is a success with 4 KiB kept.
        kept = {len(a["response_body"] or "") for a in found["/split"]}
        if kept != {3000}:
            wrong.append(f"/split: kept body lengths {kept}, expected the whole 3000 bytes")
        if {a["response_body"] for a in found["/huge"]} != {"x" * outcome.MAX_KEPT_BODY}:
            kept = {len(a["response_body"] or "") for a in found["/huge"]}
            wrong.append(f"/huge: kept body lengths {kept}, expected {outcome.MAX_KEPT_BODY}")
        if {a["response_body"] for a in found["/gone"]} != {"this webhook is gone"}:
            wrong.append("/gone: the 410's body was not kept")
        if await count_status(ctx, hooks["/gone"], "pending") != per_hook:
            wrong.append("/gone: a delivery left the queue of the webhook its 410 disabled")
        assert not wrong, "\n".join(wrong)
        assert len(found["/huge"]) == per_hook
        # Redirects are not followed: the loopback target was never reached.
        assert fault.hits["/redirect"] == 6 * per_hook
        assert fault.hits["/target"] == 0
        assert rss_growth < MAX_RSS_GROWTH, f"RSS grew by {rss_growth / 2**20:.1f} MiB"
        print(
            f"\n[hostile] attempts={summary} huge-answers={len(found['/huge'])} "
            f"huge-bytes-pushed={fault.bytes_sent['/huge'] / 2**20:.0f}MiB "
            f"rss-growth={rss_growth / 2**20:.1f}MiB in {elapsed:.1f}s"
        )


class TestIsolation:
    """Three hanging webhooks, each with a backlog above the per-webhook cap, beside a
    healthy one, with the shipped worker concurrency and per-webhook cap: the healthy one's
    deliveries all finish before any hanging attempt ends."""

    HANGING = ("/never-a", "/never-b", "/trickle-head")

    HEALTHY_USERS = 50 if LONG else 20
    TIMEOUT = 6.0

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"request_timeout": self.TIMEOUT})

    async def test_a_healthy_webhook_is_not_slowed_by_hanging_ones(
        self, api: httpx.AsyncClient, ctx: Context, fault: FaultServer, receiver: Receiver
    ) -> None:
        hanging = {
            path: (await make_webhook(api, fault.url(path), event_types=["event.created"]))["id"]
            for path in self.HANGING
        }
        healthy = await make_webhook(api, receiver.url("/healthy"), event_types=["user.created"])
        # Queues per hanging webhook: more than it may have in flight at once.
        hanging_users = ctx.settings.webhook_concurrency + (30 if LONG else 6)
        await create_events(api, hanging_users, 1, "hang")
        await create_events(api, self.HEALTHY_USERS, 2, "well")
        expected = hanging_users + self.HEALTHY_USERS  # one user.created per user

        async def healthy_done() -> bool:
            return await count_status(ctx, healthy["id"], "delivered") == expected

        started = time.monotonic()
        async with running(ctx):
            await eventually(healthy_done, within=4 * self.TIMEOUT, what="the healthy webhook")
            took = time.monotonic() - started
            hanging_attempts = {
                path: len(await attempts_of(ctx, hook)) for path, hook in hanging.items()
            }
            held = {path: fault.open[path] for path in self.HANGING}
        print(
            f"\n[isolation] healthy deliveries={expected} in {took:.2f}s; "
            f"hanging connections then={held}; hanging attempts ended then={hanging_attempts}"
        )
        assert all(held.values()), held
        assert took < self.TIMEOUT - 1, (
            f"the healthy webhook took {took:.1f}s: it waited for the hanging ones "
            f"(request timeout {self.TIMEOUT}s)"
        )
        assert set(hanging_attempts.values()) == {0}, hanging_attempts
        assert len(receiver.at("/healthy")) == expected
