"""bench.delivery_micro drains with the real worker and a stubbed send, and leaves the real
``sender.send`` in place afterwards."""

from __future__ import annotations

from bench import delivery_micro

from consent_relay.delivery import sender


async def test_a_micro_drain_delivers_everything_and_restores_the_sender() -> None:
    real = sender.send
    drain = await delivery_micro.measure("sqlite", 200)
    assert drain.worker_us > 0
    assert drain.server_us is None  # SQLite runs in the worker's process
    assert drain.wal_bytes is None
    assert sender.send is real


async def test_a_micro_drain_on_postgres_gives_the_servers_cpu() -> None:
    drain = await delivery_micro.measure("postgres", 200)
    assert drain.worker_us > 0
    assert drain.server_us is not None  # the local server's, over the drain
    assert drain.server_us > 0
