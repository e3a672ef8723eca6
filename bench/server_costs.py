"""``python -m bench.server_costs [N] [ROUNDS]``: what the PostgreSQL server spends a delivery,
and on what.

On two shared cores a second worker process gains only the CPU the machine has left, and the
server's share of a delivery is the largest after the request itself (the bench's scale-out
scenario: the complete floor's server spends about 40 CPU-µs a delivery, the engine's about
70 to 90). This takes that share apart: the drain of ``bench.delivery_micro`` (the real
``Worker`` on N queued deliveries, ``sender.send`` stubbed to answer 204, no HTTP), on
PostgreSQL, as shipped and with one part of the record taken out at a time, alternating, and
prints for each the median over ``ROUNDS`` of the server's CPU-µs a delivery, the bytes of
write-ahead log it wrote a delivery and the worker's CPU-µs, with the difference to the
engine as shipped. The variants are measurements, not options: what a part costs is the
difference it leaves, in the same run.

- ``engine``: as shipped;
- ``no ledger``: the record statement without the ledger's entries (``queue_pg.RECORD``
  in place of ``RECORD_LEDGERED``, as ``bench.ledger_cost`` measures it);
- ``no attempts``: the record without its attempt rows;
- ``one recorder``: one record at a time (``worker.RECORDERS_PG`` = 1), against the two
  that overlap their round trips (and take the ledger's head in turn).

Defaults: 20,000 deliveries, 3 rounds. No figure from it is a bench target.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import uvloop

from bench import delivery_micro
from consent_relay.delivery import worker
from consent_relay.storage import queue_pg


def _without_attempts() -> contextlib.AbstractContextManager[Any]:
    record = queue_pg.record

    async def record_no_attempts(conn: Any, results: Any, now: str, now_ms: int, *rest: Any) -> Any:
        _with_attempts, *others = rest
        return await record(conn, results, now, now_ms, False, *others)

    return mock.patch.object(queue_pg, "record", record_no_attempts)


VARIANTS: dict[str, Callable[[], contextlib.AbstractContextManager[Any]]] = {
    "engine": contextlib.nullcontext,
    "no ledger": lambda: mock.patch.object(queue_pg, "RECORD_LEDGERED", queue_pg.RECORD),
    "no attempts": _without_attempts,
    "one recorder": lambda: mock.patch.object(worker, "RECORDERS_PG", 1),
}


async def run(count: int, rounds: int) -> dict[str, list[delivery_micro.Drain]]:
    """Each variant's drains, ``rounds`` of them, the variants taken in turn each round."""
    drains: dict[str, list[delivery_micro.Drain]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, variant in VARIANTS.items():
            with variant():
                drains[name].append(await delivery_micro.measure("postgres", count))
    return drains


def _median(values: Sequence[float | None]) -> float:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else float("nan")


def report(drains: dict[str, list[delivery_micro.Drain]]) -> list[str]:
    base = _median([d.server_us for d in drains["engine"]])
    lines = []
    for name, runs in drains.items():
        server = _median([d.server_us for d in runs])
        wal = _median([d.wal_bytes for d in runs])
        work = _median([d.worker_us for d in runs])
        diff = "" if name == "engine" else f" ({server - base:+.0f})"
        lines.append(
            f"{name:>13}: server {server:.0f}{diff} CPU-us/delivery "
            f"(runs {[round(d.server_us or 0) for d in runs]}), WAL {wal:.0f} B/delivery, "
            f"worker {work:.0f} CPU-us/delivery"
        )
    return lines


async def main(count: int, rounds: int) -> None:
    for line in report(await run(count, rounds)):
        print(line, flush=True)


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:3]]
    uvloop.run(main(*(arguments + [20_000, 3][len(arguments) :])))
