"""bench.delivery_micro drains with the real worker and a stubbed send, and leaves the real
``sender.send`` in place afterwards."""

from __future__ import annotations

from bench import delivery_micro

from consent_relay.delivery import sender


async def test_a_micro_drain_delivers_everything_and_restores_the_sender() -> None:
    real = sender.send
    worker_us, database_us = await delivery_micro.one_drain("sqlite", 200)
    assert worker_us > 0
    assert database_us is None  # SQLite runs in the worker's process
    assert sender.send is real


async def test_a_micro_drain_on_postgres_gives_the_servers_cpu() -> None:
    worker_us, server_us = await delivery_micro.one_drain("postgres", 200)
    assert worker_us > 0
    assert server_us is not None  # the local server's, over the drain
    assert server_us > 0
