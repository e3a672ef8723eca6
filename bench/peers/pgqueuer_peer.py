"""Peer: pgqueuer (PostgreSQL, asyncio), set up as its documentation recommends.

What a Python team on PostgreSQL would write instead of this engine: one entrypoint whose
job POSTs the job's payload, signed, with one shared ``aiohttp`` session. At-least-once, as
pgqueuer's reliability and retry guides describe it:

- durable tables (the default ``pgq install``: logged, nothing lost on a crash), with the
  autovacuum settings of ``pgq autovac`` (its performance guide's checklist);
- ``DatabaseRetryEntrypointExecutor``: a failed POST (an error, a timeout, a non-2xx answer)
  re-queues the job in the database with exponential backoff (5 attempts from 1 s);
- the heartbeat (``heartbeat_timeout``, 30 s by default): the job of a crashed worker is
  picked again;
- the ``QueueManager`` on a dedicated asyncpg connection (for LISTEN), ``batch_size`` raised
  for short jobs (its performance guide) to 100, the engine's claim size, and
  ``max_concurrent_tasks`` the same number of requests in flight as the engine
  (``--concurrency``, at least twice the batch, as pgqueuer requires).

The jobs are enqueued in bulk (one statement per 5,000) before the timed drain, in a fresh
database (``bench_<pid>_peers``, dropped afterwards). The worker is its own process:
``python -m bench.peers.pgqueuer_peer --db-url ... --url ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta
from typing import Any

import orjson

from bench import db
from bench.peers.common import JSON_HEADERS, PeerChild, body, bound_s, timed_drain
from bench.procs import _say, _stdin_lines, _wait_command, child_env, proc_status_kb
from bench.receiver import ReceiverProcess
from bench.scenarios import Config, Drain

ENTRYPOINT = "deliver_webhook"
ENQUEUE_CHUNK = 5_000
MAX_ATTEMPTS = 5
REQUEST_TIMEOUT_S = 10.0
HEARTBEAT_TIMEOUT = timedelta(seconds=30)  # pgqueuer's default, stated


def batch_size(concurrency: int) -> int:
    """The dequeue batch: the engine's claim size (100), within pgqueuer's rule that
    ``max_concurrent_tasks`` be at least twice the batch."""
    return max(1, min(100, concurrency // 2))


async def _queries(url: str) -> tuple[Any, Any]:
    """A pgqueuer ``Queries`` on a connection of its own (and the connection)."""
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    return Queries(AsyncpgDriver(conn)), conn


async def install_and_enqueue(url: str, count: int, payload: bytes) -> None:
    """``pgq install`` (durable), ``pgq autovac``, and ``count`` jobs, a few thousand per
    statement."""
    queries, conn = await _queries(url)
    try:
        await queries.install()
        await queries.optimize_autovacuum()
        left = count
        while left > 0:
            n = min(ENQUEUE_CHUNK, left)
            await queries.enqueue([ENTRYPOINT] * n, [payload] * n, [0] * n)
            left -= n
    finally:
        await conn.close()


async def run(cfg: Config, receiver: ReceiverProcess, secret: str, path: str) -> Drain:
    """Enqueue ``cfg.deliveries`` jobs, then time one pgqueuer worker process draining them."""
    n = cfg.deliveries
    async with db.fresh_postgres("peers") as url:
        await install_and_enqueue(url, n, body())
        args = ["--db-url", url, "--url", receiver.url(path), "--secret", secret]
        args += ["--concurrency", str(cfg.concurrency), "--max-seconds", str(bound_s(n) + 120)]
        child = PeerChild("bench.peers.pgqueuer_peer", args, child_env({}), cfg.log)
        queries, conn = await _queries(url)
        try:

            async def settled() -> bool:
                """Every job is finished: pgqueuer deletes a job once its log is written."""
                return sum(int(s.count) for s in await queries.queue_size()) == 0

            async with child:
                await child.start()
                return await timed_drain(
                    receiver, child, expected=n, prefix=path, settled=settled, within=bound_s(n)
                )
        finally:
            await conn.close()


# -- the worker process ----------------------------------------------------------------------------


async def work(db_url: str, url: str, secret: str, concurrency: int, max_seconds: float) -> None:
    import aiohttp
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.executors import DatabaseRetryEntrypointExecutor, EntrypointExecutorParameters
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    from consent_relay.security import signing

    secrets = [secret]
    conn = await asyncpg.connect(db_url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )

    def retrying(params: EntrypointExecutorParameters) -> DatabaseRetryEntrypointExecutor:
        return DatabaseRetryEntrypointExecutor(
            parameters=params, max_attempts=MAX_ATTEMPTS, initial_delay=timedelta(seconds=1)
        )

    @qm.entrypoint(ENTRYPOINT, executor_factory=retrying)
    async def deliver(job: Job) -> None:
        payload = job.payload or b""
        headers = {
            **JSON_HEADERS,
            **signing.headers(secrets, f"msg_{job.id}", int(time.time()), payload),
        }
        async with session.post(url, data=payload, headers=headers) as response:
            await response.read()
            response.raise_for_status()  # a non-2xx answer is a failed attempt: retried

    reader = await _stdin_lines()
    _say("READY")
    if await _wait_command(reader, max_seconds) != "go":
        await session.close()
        await conn.close()
        _say(orjson.dumps({"sent": 0, **proc_status_kb()}).decode())
        return
    began = time.time()
    cpu_began = time.process_time()
    running = asyncio.create_task(
        qm.run(
            batch_size=batch_size(concurrency),
            max_concurrent_tasks=concurrency,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,  # a crashed worker's jobs are picked again
        )
    )
    await _wait_command(reader, max_seconds)
    qm.shutdown.set()
    await asyncio.wait_for(running, REQUEST_TIMEOUT_S + 30)
    cpu = time.process_time() - cpu_began
    await session.close()
    await conn.close()
    report = {"started": began, "stopped": time.time(), "cpu_s": cpu, **proc_status_kb()}
    _say(orjson.dumps(report).decode())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=900)
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(work(args.db_url, args.url, args.secret, args.concurrency, args.max_seconds))


if __name__ == "__main__":
    main()
