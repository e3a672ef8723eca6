"""``python -m bench.ledger_cost``: what the accountability ledger adds to recording
delivered results, the database part of the delivery hot path (README, "Privacy").

Fills a queue of ``--deliveries`` deliveries (one organization, one webhook, one message a
user), then claims and records them as delivered in batches of ``--batch``, as the worker
does (``batches.claim`` and ``batches.record``), once with the ledger and once without
(``storage.ledger.append`` replaced by a no-op, and on PostgreSQL the worker's record
statement by the one without the ledger's part), on SQLite and PostgreSQL, alternating
``--rounds`` times. Reports the median wall and CPU microseconds per delivery of the
recording, and the difference. No HTTP: the figure is the database cost alone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from consent_relay import crypto, ids
from consent_relay.domain.timefmt import now_ts
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn, WebhookIn
from consent_relay.services import orgs, webhooks
from consent_relay.settings import Settings
from consent_relay.storage import batches, ledger, queue, queue_pg
from consent_relay.storage.records import MessageRecord, NewDelivery
from consent_relay.storage.store import Store

POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fresh(kind: str, workdir: Path, n: int) -> Context:
    if kind == "sqlite":
        url = f"sqlite:///{workdir / f'ledger-{time.monotonic_ns()}.db'}"
    else:
        name = f"consent_relay_ledger_cost_{time.monotonic_ns()}"
        await _admin(f'CREATE DATABASE "{name}"')
        url = str(make_url(POSTGRES).set(database=name))
    settings = Settings(data_dir=workdir, database_url=url, secret_key=crypto.new_key())
    store = Store(url)
    await store.migrate()
    ctx = Context(settings=settings, store=store, box=crypto.SecretBox([settings.secret_key]))
    await orgs.create_organization(ctx, OrganizationIn(id="acme"))
    hook = await webhooks.create_webhook(
        ctx, "acme", WebhookIn.model_validate({"url": "https://receiver.example/hook"})
    )
    now = now_ts()
    records = [
        MessageRecord(
            organization_id="acme",
            id=ids.new_id("msg"),
            type="user.updated",
            regulation="gdpr",
            user_id=f"user-{i}",
            parameters={"user": {"id": f"user-{i}", "organization_user_id": f"u{i}@x.test"}},
            created_at=now,
        )
        for i in range(n)
    ]
    new = [NewDelivery(message=r, webhook_id=hook["id"]) for r in records]
    async with store.write() as tx:
        await queue.enqueue(tx, records, new, ctx.clock_ms(), now)
    if kind == "postgres":
        async with store.write() as tx:
            await tx.conn.execute(text("ANALYZE"))
    return ctx


async def _drop(ctx: Context, kind: str) -> None:
    url = ctx.store.url
    await ctx.store.close()
    if kind == "postgres":
        await _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _delivered(claimed: queue.Claimed) -> queue.Result:
    body = b'{"type":"user.updated","parameters":{}}'
    return queue.Result(
        claimed=claimed,
        status="delivered",
        due_ms=None,
        outcome="ok",
        attempt_id=ids.new_id("atm"),
        started_at=now_ts(),
        duration_ms=3,
        status_code=204,
        response_body="",
        request_headers={"content-type": "application/json"},
        error=None,
        response_bytes=0,
        payload_sha256=hashlib.sha256(body).hexdigest(),
    )


async def _record_all(ctx: Context, batch: int) -> tuple[float, float, int]:
    """Claim and record every delivery; (wall s, CPU s, deliveries) spent recording."""
    wall = cpu = 0.0
    done = 0
    while True:
        claimed = await batches.claim(
            ctx.store, limit=batch, now_ms=ctx.clock_ms() + 10**9,
            lease="bench", lease_ms=60_000,
        )  # fmt: skip
        if not claimed:
            return wall, cpu, done
        results = [_delivered(c) for c in claimed]
        w0, c0 = time.perf_counter(), time.process_time()
        await batches.record(ctx.store, results, now_ms=ctx.clock_ms(), now=now_ts())
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        done += len(results)


async def _nothing(_tx: Any, _results: Any, _now: str) -> int:
    return 0


def _nothing_sqlite(_db: Any, _results: Any, _now: str) -> int:
    return 0


async def measure(kind: str, with_ledger: bool, n: int, batch: int, workdir: Path) -> Any:
    ctx = await _fresh(kind, workdir, n)
    real: Callable[..., Awaitable[int]] = ledger.append
    real_sqlite: Callable[..., int] = ledger.append_sqlite  # the worker's SQLite record's
    real_pg = queue_pg.RECORD_LEDGERED  # the worker's PostgreSQL record's
    if not with_ledger:
        ledger.append = _nothing  # type: ignore[assignment]
        ledger.append_sqlite = _nothing_sqlite  # type: ignore[assignment]
        queue_pg.RECORD_LEDGERED = queue_pg.RECORD
    try:
        wall, cpu, done = await _record_all(ctx, batch)
        async with ctx.store.read() as tx:
            entries = (await tx.conn.execute(text("SELECT count(*) FROM ledger_entries"))).scalar()
    finally:
        ledger.append = real  # type: ignore[assignment]
        ledger.append_sqlite = real_sqlite
        queue_pg.RECORD_LEDGERED = real_pg
        await _drop(ctx, kind)
    assert done == n, (done, n)
    assert entries == (n if with_ledger else 0), entries
    return wall / n * 1e6, cpu / n * 1e6


async def main(n: int, batch: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for kind in ("sqlite", "postgres"):
            figures: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for _ in range(rounds):
                for with_ledger in (False, True):
                    figures[with_ledger].append(await measure(kind, with_ledger, n, batch, workdir))
            med = {
                k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
                for k, v in figures.items()
            }
            (w0, c0), (w1, c1) = med[False], med[True]
            print(
                f"{kind}: recording {n} deliveries in batches of {batch} (median of {rounds}): "
                f"without ledger {w0:.1f} us wall / {c0:.1f} us CPU a delivery, "
                f"with {w1:.1f} / {c1:.1f} (+{w1 - w0:.1f} us wall, +{c1 - c0:.1f} us CPU)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.deliveries, args.batch, args.rounds))
