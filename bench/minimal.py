"""The floor: a minimal claim / POST / mark-done loop, as docs/benchmarks.md describes it.

No Consent Relay code at all: one table of ``count`` due rows, claimed 100 at a time with a
lease (``UPDATE ... RETURNING``, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), POSTed by
``concurrency`` sender coroutines through the engine's client (``delivery.http1``, what the
worker POSTs with; ``--client aiohttp``: the bare client's session), marked done in batches.
No signatures, no attempts rows, no per-user order, no message bodies read. What it reaches,
next to the bare client in the same run, is the most any persistent delivery engine can reach
on this machine: the real worker does strictly more per delivery.

Run as ``python -m bench.procs minimal ...`` (a child of ``bench``); SQLite through the
standard library's ``sqlite3`` (WAL, ``synchronous=NORMAL``), PostgreSQL through asyncpg.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from consent_relay.delivery import http1

BATCH = 100
LEASE_MS = 60_000

_PG_CLAIM = """
    UPDATE minimal_queue SET lease = $1, due_ms = $2
    WHERE pk IN (SELECT pk FROM minimal_queue WHERE due_ms IS NOT NULL AND due_ms <= $3
                 ORDER BY due_ms LIMIT $4 FOR UPDATE SKIP LOCKED)
    RETURNING pk
"""
_PG_DONE = "UPDATE minimal_queue SET done = true, due_ms = NULL WHERE pk = ANY($1::bigint[])"
_SQLITE_CLAIM = """
    UPDATE minimal_queue SET lease = ?, due_ms = ?
    WHERE pk IN (SELECT pk FROM minimal_queue INDEXED BY minimal_due
                 WHERE due_ms IS NOT NULL AND due_ms <= ? ORDER BY due_ms LIMIT ?)
    RETURNING pk
"""


@dataclass(frozen=True)
class Store:
    """Claim and mark done, on one of the two databases."""

    claim: Callable[[str, int, int], Awaitable[list[int]]]
    done: Callable[[Sequence[int]], Awaitable[None]]
    close: Callable[[], Awaitable[None]]


async def open_store(db_url: str, count: int, *, fill: bool = True) -> Store:
    """Create and fill the table (not timed) unless another process did (``fill=False``),
    and return the loop's two operations."""
    if db_url.startswith("sqlite"):
        return _sqlite_store(db_url.split("///", 1)[1], count, fill)
    import asyncpg

    pool: Any = await asyncpg.create_pool(db_url, min_size=2, max_size=2)
    if fill:
        await _fill_postgres(pool, count)

    async def claim(lease: str, now_ms: int, limit: int) -> list[int]:
        rows = await pool.fetch(_PG_CLAIM, lease, now_ms + LEASE_MS, now_ms, limit)
        return [row[0] for row in rows]

    async def done(pks: Sequence[int]) -> None:
        await pool.execute(_PG_DONE, list(pks))

    async def close() -> None:
        await pool.close()

    return Store(claim, done, close)


def _sqlite_store(path: str, count: int, fill: bool) -> Store:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    if fill:
        conn.execute(
            "CREATE TABLE minimal_queue (pk INTEGER PRIMARY KEY, due_ms INTEGER, lease TEXT,"
            " done INTEGER NOT NULL DEFAULT 0)"
        )
        conn.execute("CREATE INDEX minimal_due ON minimal_queue (due_ms) WHERE due_ms IS NOT NULL")
        conn.executemany(
            "INSERT INTO minimal_queue (due_ms) VALUES (?)", [(n,) for n in range(count)]
        )

    async def claim(lease: str, now_ms: int, limit: int) -> list[int]:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(_SQLITE_CLAIM, (lease, now_ms + LEASE_MS, now_ms, limit))
        pks = [row[0] for row in rows]
        conn.execute("COMMIT")
        return pks

    async def done(pks: Sequence[int]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "UPDATE minimal_queue SET done = 1, due_ms = NULL WHERE pk = ?", [(p,) for p in pks]
        )
        conn.execute("COMMIT")

    async def close() -> None:
        conn.close()

    return Store(claim, done, close)


async def _fill_postgres(pool: Any, count: int) -> None:
    await pool.execute(
        "CREATE TABLE minimal_queue (pk bigserial PRIMARY KEY, due_ms bigint, lease text,"
        " done boolean NOT NULL DEFAULT false);"
        "CREATE INDEX minimal_due ON minimal_queue (due_ms) WHERE due_ms IS NOT NULL"
    )
    await pool.execute(
        "INSERT INTO minimal_queue (due_ms) SELECT n FROM generate_series(1, $1) AS n", count
    )
    await pool.execute("VACUUM ANALYZE minimal_queue")


# One POST: its status. Raises what the client raises for a failed request.
Post = Callable[[str, bytes, dict[str, str]], Awaitable[int]]
FAILED = (aiohttp.ClientError, TimeoutError, OSError, http1.ProtocolFailure)


def aiohttp_post(session: aiohttp.ClientSession) -> Post:
    async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status

    return post


def direct_post(pool: http1.Pool) -> Post:
    async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
        return (await pool.post(url, body, headers)).status

    return post


async def drain(store: Store, post: Post, url: str, body: bytes, senders: int) -> tuple[int, int]:
    """Claim, send and mark done until nothing is left to claim and everything claimed is
    marked (other processes may share the table): (sent ok, errors)."""
    headers = {"Content-Type": "application/json"}
    todo: asyncio.Queue[int] = asyncio.Queue()
    results: asyncio.Queue[int] = asyncio.Queue()
    limit = 4 * senders  # leases held at most, as the real worker bounds them (LEASES_PER_SLOT)
    held = ok = errors = 0
    room = asyncio.Event()
    drained = False

    async def claimer() -> None:
        nonlocal held, drained
        while True:
            free = limit - held
            if free < min(BATCH, limit // 4):
                room.clear()
                await room.wait()
                continue
            now_ms = int(time.time() * 1000) + 10**12  # every row is due
            pks = await store.claim("minimal", now_ms, min(free, BATCH))
            if not pks:
                drained = True
                room.set()
                return
            held += len(pks)
            for pk in pks:
                todo.put_nowait(pk)

    async def sender() -> None:
        nonlocal ok, errors
        while True:
            pk = await todo.get()
            try:
                status = await post(url, body, headers)  # (not in the +=: it reads ok first)
            except FAILED:
                errors += 1
            else:
                ok += 200 <= status < 300
            results.put_nowait(pk)

    async def recorder() -> None:
        nonlocal held
        while not (drained and held == 0):
            batch = await next_batch(results)
            if batch:
                await store.done(batch)
                held -= len(batch)
                room.set()

    await run_loops(claimer, sender, recorder, senders)
    return ok, errors


T = TypeVar("T")


async def next_batch(results: asyncio.Queue[T], most: int = 500) -> list[T]:
    """What the senders have finished, up to ``most`` (empty after 50 ms of nothing)."""
    try:
        first = await asyncio.wait_for(results.get(), 0.05)
    except TimeoutError:
        return []
    batch = [first]
    while not results.empty() and len(batch) < most:
        batch.append(results.get_nowait())
    return batch


async def run_loops(
    claimer: Callable[[], Coroutine[Any, Any, None]],
    sender: Callable[[], Coroutine[Any, Any, None]],
    recorder: Callable[[], Awaitable[None]],
    senders: int,
) -> None:
    """One claimer and ``senders`` senders, until the recorder is done."""
    claiming = asyncio.create_task(claimer())
    sending = [asyncio.create_task(sender()) for _ in range(senders)]
    await recorder()
    for task in [claiming, *sending]:
        task.cancel()
    await asyncio.gather(claiming, *sending, return_exceptions=True)
