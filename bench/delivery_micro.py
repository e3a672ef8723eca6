"""CPU a delivery costs the engine itself, with the HTTP request taken out.

A developer's aid for the worker's own layers (claim, render and sign, the attempt's
bookkeeping, record, ledger), in process: the real ``Worker`` drains N queued deliveries
(``bench.db.fill``: one webhook, queues of four) on a fresh database, with ``sender.send``
stubbed to answer 204 at once, so the figure is the engine's CPU a delivery without aiohttp's,
and the noise of a receiver and a client process sharing the two cores is gone. It prints,
for SQLite and PostgreSQL, the median over rounds of this process's CPU-µs a delivery (on
SQLite the database engine runs in it) and, on PostgreSQL, the server's CPU-µs a delivery
(``db.server_cpu_s``, as the bench's delivery scenario reads it: every process of the local
server, the WAL writer's and the rest included, over the drain only).

``python -m bench.delivery_micro [N] [ROUNDS]`` (defaults 20,000 and 3). Compare two
checkouts in the same run with ``PYTHONPATH=<checkout>/src:<checkout>``, alternating; no
figure from it is a bench target (those are ``python -m bench``'s, against the bare client).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import db
from consent_relay import crypto, gctune
from consent_relay.delivery import outcome, sender
from consent_relay.delivery.outcome import Outcome
from consent_relay.delivery.worker import Worker

CONCURRENCY = 200


class Answering:
    """``sender.send``'s stand-in: 204 at once; ``done`` is set at the ``expected``-th."""

    def __init__(self) -> None:
        self.count = 0
        self.expected = 0
        self.done = asyncio.Event()

    async def send(
        self, _session: Any, _url: str, _body: bytes, _headers: Mapping[str, str], **_: Any
    ) -> Outcome:
        await asyncio.sleep(0)  # one turn of the loop, as a response would take at the least
        self.count += 1
        if self.count == self.expected:
            self.done.set()
        return Outcome(outcome.OK, 1, 204, "", response_bytes=0)


async def _recorded(ctx: Any) -> None:
    """Until every result is recorded (no delivery pending)."""
    for _ in range(60_000):
        if not await db.pending_count(ctx):
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("results still unrecorded")


@dataclass(frozen=True)
class Drain:
    """What one drain cost, a delivery: the worker's CPU-µs and, on PostgreSQL, the server's
    CPU-µs and the bytes of write-ahead log it wrote (None on SQLite)."""

    worker_us: float
    server_us: float | None
    wal_bytes: float | None


async def measure(kind: str, count: int) -> Drain:
    """Drain ``count`` deliveries with ``sender.send`` stubbed (restored afterwards)."""
    answering = Answering()
    answering.expected = count
    real = sender.send
    setattr(sender, "send", answering.send)  # noqa: B010 (a stub, for this drain only)
    try:
        return await _drain(kind, count, answering)
    finally:
        setattr(sender, "send", real)  # noqa: B010


async def _drain(kind: str, count: int, answering: Answering) -> Drain:
    workdir = Path(tempfile.mkdtemp())
    async with db.database(kind, "_micro") as url:
        settings = db.settings_for(
            url,
            workdir,
            crypto.new_key(),
            worker_concurrency=CONCURRENCY,
            webhook_concurrency=CONCURRENCY,
        )
        async with db.open_context(settings) as ctx:
            hooks = await db.create_org_and_webhooks(ctx, "bench", ["http://127.0.0.1:9/dlv"])
            await db.fill(ctx, "bench", hooks, count, max(1, count // 4))
            gctune.settle()
            wal_from = None if ctx.store.is_sqlite else await db.wal_position()
            server_before = None if ctx.store.is_sqlite else await db.server_cpu_s()
            worker = Worker(ctx, concurrency=CONCURRENCY)
            stop = asyncio.Event()
            began = time.process_time()
            task = asyncio.create_task(worker.run(stop))
            await answering.done.wait()
            await _recorded(ctx)
            cpu = time.process_time() - began
            server_after = None if server_before is None else await db.server_cpu_s()
            wal = None if wal_from is None else await db.wal_bytes_since(wal_from)
            stop.set()
            await task
    per_db = None
    if server_after is not None and server_before is not None:
        per_db = (server_after - server_before) / count * 1e6
    return Drain(cpu / count * 1e6, per_db, None if wal is None else wal / count)


async def main(count: int, rounds: int) -> None:
    for kind in ("sqlite", "postgres"):
        runs = [await measure(kind, count) for _ in range(rounds)]
        workers = [r.worker_us for r in runs]
        line = f"{kind}: worker {statistics.median(workers):.0f} CPU-us/delivery"
        line += f" (runs {[round(w) for w in workers]})"
        dbs = [r.server_us for r in runs if r.server_us is not None]
        if dbs:
            line += f", database server {statistics.median(dbs):.0f} ({[round(d) for d in dbs]})"
        print(line, flush=True)


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:3]]
    uvloop.run(main(*(arguments + [20_000, 3][len(arguments) :])))
