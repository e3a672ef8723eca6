"""The bench's PostgreSQL server CPU (``bench.db.server_cpu_s``) counts the work of backends
that have already gone: a floor's child process closes its pool before the bench reads the
figure, so a measure of the live backends alone would leave the floor's database work out
and flatter it against the engine."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench import db

from consent_relay import crypto


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def test_server_cpu_counts_backends_that_have_exited(tmp_path: Path) -> None:
    async with db.fresh_postgres("server_cpu") as url:
        before = await db.server_cpu_s()
        assert before is not None
        assert before > 0
        settings = db.settings_for(url, tmp_path, crypto.new_key())
        async with db.open_context(settings) as ctx:  # its pool's backends do the work
            hooks = await db.create_org_and_webhooks(ctx, "acme", ["http://127.0.0.1:9/x"])
            at_start = await db.backend_cpu_s(ctx)
            await db.fill(ctx, "acme", hooks, 3000, 750)
            used = (await db.backend_cpu_s(ctx) or 0.0) - (at_start or 0.0)
            pids = await db.backend_pids(ctx)
        for _ in range(500):  # until the postmaster has reaped them (their CPU counts there)
            if not any(_running(pid) for pid in pids):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError(f"backends {pids} still there")
        after = await db.server_cpu_s()
    assert after is not None
    assert used > 0.05, used
    assert after - before >= used * 0.9, (before, after, used)


async def test_server_cpu_counts_a_phase_shorter_than_a_clock_tick(tmp_path: Path) -> None:
    """A few statements cost the backends a few milliseconds, under /proc's 10 ms tick: the
    figure still moves (a short drain's server CPU read 0 when it counted ticks)."""
    async with db.fresh_postgres("server_cpu_short") as url:
        settings = db.settings_for(url, tmp_path, crypto.new_key())
        async with db.open_context(settings) as ctx:
            await db.create_org_and_webhooks(ctx, "warm", ["http://127.0.0.1:9/x"])
            before = await db.server_cpu_s()
            await db.create_org_and_webhooks(ctx, "acme", ["http://127.0.0.1:9/x"])
            after = await db.server_cpu_s()
    assert before is not None
    assert after is not None
    assert 0 < after - before < 0.05, (before, after)
