"""bench.server_costs drains on PostgreSQL in each of its variants, gives the server's CPU and
write-ahead log a delivery for each, and puts back everything a variant replaced."""

from __future__ import annotations

from bench import server_costs

from consent_relay.delivery import sender, worker
from consent_relay.storage import queue_pg


async def test_each_variant_drains_and_everything_replaced_is_put_back() -> None:
    shipped = (queue_pg.record, queue_pg.RECORD_LEDGERED, worker.RECORDERS_PG, sender.send)
    drains = await server_costs.run(200, 1)
    assert (queue_pg.record, queue_pg.RECORD_LEDGERED, worker.RECORDERS_PG, sender.send) == (
        shipped
    )
    assert list(drains) == ["engine", "no ledger", "no attempts", "one recorder"]
    for runs in drains.values():
        (drain,) = runs
        assert drain.worker_us > 0
        assert drain.server_us is not None
        assert drain.server_us > 0
        assert drain.wal_bytes is not None
        assert drain.wal_bytes > 0
    lines = server_costs.report(drains)
    assert len(lines) == 4
    assert "WAL" in lines[0]
    assert "(+" not in lines[0]  # the engine's own line has no difference to itself
    assert "(-" not in lines[0]


def test_the_variants_replace_what_they_say_while_they_run() -> None:
    with server_costs.VARIANTS["no ledger"]():
        assert queue_pg.RECORD_LEDGERED == queue_pg.RECORD
    with server_costs.VARIANTS["one recorder"]():
        assert worker.RECORDERS_PG == 1
    record = queue_pg.record
    with server_costs.VARIANTS["no attempts"]():
        assert queue_pg.record is not record
    assert queue_pg.record is record
    assert queue_pg.RECORD_LEDGERED != queue_pg.RECORD
