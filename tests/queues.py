"""Queued deliveries for the storage tests of the worker's claim and record: queues filled
straight into the schema, results to record, the queues' clocks as they stand, and a count
of the transactions the worker's storage calls open."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from consent_relay import ids
from consent_relay.runtime import Context
from consent_relay.storage import inspect, queue, tamper
from consent_relay.storage.queue import Claimed, Result
from consent_relay.storage.store import Store
from consent_relay.storage.tx import Tx
from tests.rows import webhook_row

NOW = "2026-01-01T00:00:00.000Z"
LEASE_MS = 60_000


async def queued(
    ctx: Context,
    per_user: dict[str, int],
    hooks: tuple[str, ...] = ("wh_1",),
    *,
    orgs: Mapping[str, str] | None = None,
    message_type: str = "user.updated",
) -> int:
    """``per_user[user]`` deliveries in that user's queue of each webhook, each webhook of
    organization ``orgs[hook]`` (default acme), each message of type ``message_type``; the
    clock now."""
    now = ctx.clock_ms()
    org_of = orgs or {}
    async with ctx.store.write() as tx:
        rows = [webhook_row(h, org_of.get(h, "acme")) for h in hooks]
        await tamper.insert_rows(tx, "webhooks", rows)
        items = [
            (org_of.get(hook, "acme"), hook, f"msg_{hook}_{user}_{n}", user)
            for hook in hooks
            for user, count in per_user.items()
            for n in range(count)
        ]
        messages = [
            {"id": m, "organization_id": o, "type": message_type, "regulation": "none",
             "user_id": u, "parameters": '{"n": 1}', "created_at": NOW}
            for o, _h, m, u in items
        ]  # fmt: skip
        await tamper.insert_rows(tx, "messages", messages)
        await queue.append(tx, items, now, NOW)
    return now


def result_of(item: Claimed, status: str = "delivered", **fields: Any) -> Result:
    """What an attempt at ``item`` came to, ready to record (a 204 unless told otherwise)."""
    values: dict[str, Any] = {
        "claimed": item,
        "status": status,
        "due_ms": None if status != "pending" else 1,
        "outcome": "ok" if status == "delivered" else "E_HTTP",
        "attempt_id": ids.new_id("atm"),
        "started_at": NOW,
        "duration_ms": 5,
        "status_code": 204,
        "response_body": "",
        "request_headers": {},
        "error": None,
    }
    values.update(fields)
    return Result(**values)


async def clocks(ctx: Context) -> dict[tuple[str, int], tuple[Any, Any, str]]:
    """(user, seq) -> (due_ms, lease_owner, status) of every delivery."""
    async with ctx.store.read() as tx:
        return {
            (d["user_id"], d["seq"]): (d["due_ms"], d["lease_owner"], d["status"])
            for d in await inspect.deliveries_with_clock(tx)
        }


@contextlib.contextmanager
def counting_transactions(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, int]]:
    """Counts ``store.write()`` calls and the worker's own transactions
    (``store.sqlite_transaction``, or ``store.pg_transaction`` on PostgreSQL)."""
    counts = {"write": 0, "one hop": 0}
    write = store.write
    name = "sqlite_transaction" if store.is_sqlite else "pg_transaction"
    one_hop = getattr(store, name)

    @contextlib.asynccontextmanager
    async def counted_write() -> AsyncIterator[Tx]:
        counts["write"] += 1
        async with write() as tx:
            yield tx

    async def counted_one_hop(work: Any, **options: Any) -> Any:
        counts["one hop"] += 1
        return await one_hop(work, **options)

    monkeypatch.setattr(store, "write", counted_write)
    monkeypatch.setattr(store, name, counted_one_hop)
    yield counts
