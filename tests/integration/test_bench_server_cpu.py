"""The bench's PostgreSQL server CPU (``bench.db.server_cpu_s``) counts the work of backends
that have already gone: a floor's child process closes its pool before the bench reads the
figure, so a measure of the live backends alone would leave the floor's database work out
and flatter it against the engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from bench import db

WORK = "SELECT count(*) FROM generate_series(1, 4000000)"  # some 0.2-0.5 s of a backend's CPU


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_server_cpu_counts_a_backend_that_has_exited() -> None:
    before = await db.server_cpu_s()
    assert before is not None
    assert before > 0
    conn = await asyncpg.connect(
        host=db.PG_HOST, port=db.PG_PORT, user=db.PG_USER, database="postgres"
    )
    backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
    before_work = db.proc_cpu_s(backend)
    await conn.fetchval(WORK)
    used = db.proc_cpu_s(backend) - before_work  # what that backend spent on it
    await conn.close()
    for _ in range(500):  # until the postmaster has reaped it (its CPU then counts there)
        if not _running(backend):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"backend {backend} still there")
    after = await db.server_cpu_s()
    assert after is not None
    assert used > 0.05, used
    assert after - before >= used * 0.9, (before, after, used)
