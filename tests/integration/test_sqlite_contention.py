"""SQLite under contention: the API, an in-process worker, a ``consent-relay worker``
process and a foreign process all write to one database file at once. No client ever sees
"database is locked": a busy database means waiting (the busy timeout), or a 503
problem+json when the wait runs out, never a 500. Every acknowledged change is delivered.

``CONSENT_RELAY_LONG_TESTS=1`` scales the sizes up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent_relay import errors
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import driver, inspect
from tests.e2e.helpers import (
    WorkerFleet,
    consent_event,
    eventually,
    make_webhook,
    process_env,
    read,
    running,
)
from tests.receiver import Receiver

LONG = os.environ.get("CONSENT_RELAY_LONG_TESTS") == "1"
BUSY_TIMEOUT = 10.0  # storage/engine.py: PRAGMA busy_timeout=10000

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

# A foreign writer: write transactions back to back (each holds the write lock for 5-50 ms,
# one in ten for 300 ms), and now and then a checkpoint that truncates the WAL, until SIGTERM.
CHURN = """
import random, signal, sqlite3, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("CREATE TABLE IF NOT EXISTS contention_probe (n INTEGER)")
print("ready", flush=True)
n = 0
while not stop:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO contention_probe VALUES (?)", (n,))
    time.sleep(0.3 if n % 10 == 9 else random.uniform(0.005, 0.05))  # holding the lock
    conn.execute("COMMIT")
    n += 1
    if n % 40 == 0:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    time.sleep(random.uniform(0, 0.02))
print("writes", n, flush=True)
"""

# A foreign process that takes the write lock and keeps it until a line arrives on stdin.
HOLD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE IF NOT EXISTS contention_probe (n INTEGER)")
conn.execute("INSERT INTO contention_probe VALUES (-1)")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


@contextlib.asynccontextmanager
async def foreign(script: str, path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A Python process running ``script`` on the database file; always ended and reaped."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def line_from(process: asyncio.subprocess.Process, within: float) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), within)
    return line.decode().strip()


@dataclass
class Tally:
    """What the clients saw."""

    statuses: Counter[int] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)  # event ids answered 201

    def check(self, response: httpx.Response, *ok: int) -> bool:
        """Count one answer; True for one of the ``ok`` statuses."""
        self.statuses[response.status_code] += 1
        if "locked" in response.text.lower():
            self.wrong.append(f"{response.status_code} mentions a lock: {response.text[:200]}")
        if response.status_code in ok:
            return True
        if response.status_code == 503:
            if response.headers.get("content-type") != "application/problem+json":
                self.wrong.append(f"503 not problem+json: {response.headers}")
            elif "retry-after" not in response.headers:
                self.wrong.append("503 without Retry-After")
            elif response.json().get("status") != 503:
                self.wrong.append(f"503 with a wrong problem: {response.text[:200]}")
        else:
            self.wrong.append(f"{response.status_code}: {response.text[:200]}")
        return False


async def client_loop(
    api: httpx.AsyncClient, tally: Tally, loop: int, events: int, users: int
) -> None:
    """One client: events for its own users, with reads and a user PATCH now and then."""
    user_ids: dict[str, str] = {}
    for n in range(events):
        ouid = f"c{loop}-{n % users}@example.com"
        try:
            response = await api.post(
                "/v1/consents/events", json=consent_event(ouid, "analytics", n % 2 == 0)
            )
            if tally.check(response, 201):
                tally.acknowledged.append(response.json()["id"])
                user_ids[ouid] = response.json()["user"]["id"]
            if n % 5 == 4 and ouid in user_ids:
                tally.check(await api.get("/v1/consents/events", params={"limit": "20"}), 200)
                patch = {"metadata": {"n": n}}
                user_path = f"/v1/consents/users/{user_ids[ouid]}"
                tally.check(await api.patch(user_path, json=patch), 200)
        except Exception as exc:  # an unhandled error in the app: what a 500 would be
            tally.wrong.append(f"raised {type(exc).__name__}: {exc}")


async def test_api_and_workers_and_a_foreign_writer_at_once(
    api: httpx.AsyncClient,
    ctx: Context,
    settings: Settings,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    clients, per_client, users = (8, 120, 10) if LONG else (6, 40, 5)
    hook = await make_webhook(api, receiver.url("/busy"))
    path = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = WorkerFleet(process_env(settings), logs, concurrency=20)
    tally = Tally()
    started = time.monotonic()
    async with foreign(CHURN, path) as churn:
        assert await line_from(churn, 30) == "ready"
        fleet.spawn()
        try:
            async with running(ctx, concurrency=20):
                await asyncio.gather(
                    *(client_loop(api, tally, c, per_client, users) for c in range(clients))
                )

                async def drained() -> bool:
                    fleet.check_alive()
                    return await read(ctx, inspect.count_undelivered) == 0

                await eventually(drained, within=60, interval=0.1, what="every delivery")
        finally:
            await fleet.stop()
        churn.terminate()
        foreign_writes = await line_from(churn, 10)
    elapsed = time.monotonic() - started

    assert not tally.wrong, "\n".join(tally.wrong[:20])
    assert tally.acknowledged, tally.statuses
    # Every acknowledged event went out, with every other message of the organization.
    stored = {e["id"] for e in await read(ctx, inspect.rows, "events")}
    assert set(tally.acknowledged) <= stored
    message_ids = {m["id"] for m in await read(ctx, inspect.rows, "messages")}
    arrived = [r.headers["webhook-id"] for r in receiver.at("/busy")]
    assert message_ids == set(arrived)
    delivered_events = {
        r.json["parameters"]["entity"]["id"]
        for r in receiver.at("/busy")
        if r.json["type"] == "event.created"
    }
    assert set(tally.acknowledged) <= delivered_events
    assert await read(ctx, inspect.count, "deliveries", webhook_id=hook["id"])
    worker_log = fleet.dead[0].output()
    assert "locked" not in worker_log.lower(), worker_log[-3000:]
    assert "Traceback" not in worker_log, worker_log[-3000:]
    print(
        f"\n[sqlite contention] requests={sum(tally.statuses.values())} "
        f"statuses={dict(tally.statuses)} events acknowledged={len(tally.acknowledged)} "
        f"messages={len(message_ids)} arrivals={len(arrived)} foreign {foreign_writes} "
        f"in {elapsed:.1f}s"
    )


async def test_a_write_lock_held_past_the_busy_timeout_is_a_503(
    api: httpx.AsyncClient, ctx: Context, settings: Settings, receiver: Receiver
) -> None:
    await make_webhook(api, receiver.url("/held"), event_types=["event.created"])
    path = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    tally = Tally()
    async with foreign(HOLD, path) as holder:
        assert await line_from(holder, 30) == "locked"
        # Readers are not blocked by a writer (WAL) ...
        started = time.monotonic()
        tally.check(await api.get("/v1/consents/events"), 200)
        assert time.monotonic() - started < BUSY_TIMEOUT / 2
        # ... a writer waits for the busy timeout, then gets a 503 to retry, not a 500.
        started = time.monotonic()
        refused = await api.post(
            "/v1/consents/events", json=consent_event("held@example.com", "ads", True)
        )
        waited = time.monotonic() - started
        assert not tally.check(refused, 201)
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        problem: dict[str, Any] = refused.json()
        assert problem["status"] == 503
        assert problem["title"] == "Service unavailable"
        assert waited >= BUSY_TIMEOUT * 0.9, waited
        assert holder.stdin is not None
        holder.stdin.write(b"release\n")
        await holder.stdin.drain()
        assert await line_from(holder, 30) == "released"
    # The refused change was not stored; the retry is, and is delivered.
    assert await read(ctx, inspect.count, "events") == 0
    async with running(ctx):
        retried = await api.post(
            "/v1/consents/events", json=consent_event("held@example.com", "ads", True)
        )
        assert tally.check(retried, 201)
        await receiver.wait_for(1, "/held", timeout=30)
    assert receiver.at("/held")[0].json["parameters"]["entity"]["id"] == retried.json()["id"]
    assert not tally.wrong, tally.wrong


async def test_the_workers_transaction_waits_for_a_foreign_write_lock(ctx: Context) -> None:
    """The worker's transactions (``Store.sqlite_transaction``) wait for the write lock by
    trying again every millisecond or so (``driver.in_transaction``), not with SQLite's busy
    handler: held by another process, the transaction waits, then goes ahead once it is let
    go, with nothing refused."""
    path = ctx.store.sqlite_file
    assert path is not None
    async with foreign(HOLD, path) as holder:
        assert await line_from(holder, 30) == "locked"
        waiting = asyncio.create_task(ctx.store.sqlite_transaction(lambda db: db.in_transaction))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # waiting for the lock, not refused
        assert holder.stdin is not None
        holder.stdin.write(b"release\n")
        await holder.stdin.drain()
        assert await line_from(holder, 30) == "released"
        assert await asyncio.wait_for(waiting, 30) is True


async def test_the_workers_transaction_gives_up_after_its_patience(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """... for as long as every other connection's busy timeout, then the database is
    unavailable (the worker retries later), as for any other write."""
    monkeypatch.setattr(driver, "BUSY_PATIENCE_S", 0.2)
    path = ctx.store.sqlite_file
    assert path is not None
    async with foreign(HOLD, path) as holder:
        assert await line_from(holder, 30) == "locked"
        with pytest.raises(errors.StorageUnavailable):
            # (within 5 s: SQLite's own busy timeout, 10 s, plays no part)
            await asyncio.wait_for(ctx.store.sqlite_transaction(lambda db: db.in_transaction), 5)
