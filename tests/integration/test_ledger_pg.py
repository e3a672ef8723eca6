"""PostgreSQL's ledger in SQL (``storage.ledger.pg_ctes``): the worker's record writes its
ledger entries in the same statement, one round trip, hashed by ``ledger_chain`` (migration
0016) over the same bytes ``domain.ledger`` hashes, which ``ledger verify`` checks in Python.
(What the ledger holds and the API answers, on both databases: test_ledger.py.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from consent_relay.domain import ledger as chain
from consent_relay.runtime import Context
from consent_relay.services import ledger as ledger_service
from consent_relay.storage import batches, inspect, inspect_driver, ledger, tamper
from consent_relay.storage.queue import Claimed, Result
from tests.conftest import _session_database_url
from tests.e2e.helpers import eventually
from tests.queues import LEASE_MS, NOW, queued, result_of

pytestmark = pytest.mark.postgres

# Texts that JSON escapes one way or another: quotes, backslashes, control characters,
# characters beyond ASCII (one, two, three and four bytes of UTF-8), what JavaScript escapes.
ODD = "q\"b\\s/\x01\x08\x1f\x7f é€😀\u2028\u2029<>&'"


@pytest.fixture
def db_url() -> str:
    """PostgreSQL only (SQLite chains in Python, in its record's hop: test_ledger.py)."""
    return _session_database_url()


async def _queued(ctx: Context, hooks: dict[str, str], users: Sequence[str], per_user: int) -> int:
    """``per_user`` deliveries for each of ``users`` at each webhook of ``hooks`` (webhook ->
    its organization), of a type with every character JSON escapes; the clock now."""
    return await queued(
        ctx,
        dict.fromkeys(users, per_user),
        tuple(hooks),
        orgs=hooks,
        message_type=f"user.updated{ODD}",
    )


async def _claim(ctx: Context, now: int, lease: str = "w1") -> list[Claimed]:
    return await batches.claim(ctx.store, limit=100, now_ms=now, lease=lease, lease_ms=LEASE_MS)


async def _record(ctx: Context, results: Sequence[Result], now: int) -> batches.Recorded:
    return await batches.record(ctx.store, results, now_ms=now, now=NOW)


async def _entries(ctx: Context, org: str) -> list[chain.Entry]:
    return [e async for e in ledger.walk(ctx.store.read, ledger.Query(org))]


def _delivered(item: Claimed, **fields: Any) -> Result:
    return result_of(item, payload_sha256="ab" * 32, **fields)


async def test_the_chain_function_hashes_what_the_domain_hashes(ctx: Context) -> None:
    entries: list[chain.Values] = [
        ("acme", 1, "msg_1", "dlv_1", "user.created", "u1", "wh_1", NOW, 204, "ab" * 32),
        (ODD, 2, ODD, ODD, ODD, ODD, ODD, ODD, None, None),
        ("o", 10**12, "", "", "", "", "", "", 599, ""),
    ]
    texts = [chain.canonical(chain.EntryFields(*values)).decode() for values in entries]
    expected = [row[-1] for row in chain.chain_values(chain.GENESIS, entries)]
    assert await inspect_driver.ledger_chain(ctx.store, chain.GENESIS, texts) == expected
    assert await inspect_driver.ledger_chain(ctx.store, expected[0], texts[1:]) == expected[1:]
    assert await inspect_driver.ledger_chain(ctx.store, chain.GENESIS, []) == []


async def test_the_record_writes_its_entries_in_one_statement_and_they_verify(
    ctx: Context,
) -> None:
    """Organizations and users named with every character JSON escapes: the entries the
    statement hashed verify in Python (the canonical text is the same bytes), numbered on
    from each organization's head, record after record."""
    hooks = {"wh_1": ODD, "wh_2": "acme", "wh_3": ODD}
    now = await _queued(ctx, hooks, [f"ann{ODD}", "bob"], per_user=2)
    for _round in range(2):  # the heads, then from the heads
        heads = await _claim(ctx, now)
        assert len(heads) == 6
        recorded, sent = await inspect_driver.record_statements(
            ctx.store, [_delivered(c) for c in heads], now_ms=now, now=NOW
        )
        assert len(recorded.kept) == 6
        assert len(sent) == 1  # no BEGIN, no COMMIT, no second statement
        assert "ledger_chain" in sent[0]

    checked = await ledger_service.verify(ctx)
    assert [(v.organization_id, v.entries, v.first_break) for v in checked] == sorted(
        [("acme", 4, None), (ODD, 8, None)]
    )
    odd = await _entries(ctx, ODD)
    assert [e.fields.seq for e in odd] == list(range(1, 9))
    assert {e.fields.type for e in odd} == {f"user.updated{ODD}"}
    assert {e.fields.user_id for e in odd} == {f"ann{ODD}", "bob"}
    assert {e.fields.webhook_id for e in odd} == {"wh_1", "wh_3"}
    assert {(e.fields.status_code, e.fields.payload_sha256) for e in odd} == {(204, "ab" * 32)}
    async with ctx.store.read() as tx:
        assert await ledger.head(tx, ODD) == (8, odd[-1].entry_hash)


async def test_only_delivered_results_recorded_under_their_lease_leave_entries(
    ctx: Context,
) -> None:
    """A retry and a dead letter leave no entry; nor does a result whose lease moved on, nor
    one whose webhook was deleted meanwhile (nobody to account to)."""
    now = await _queued(ctx, {"wh_1": "acme", "wh_2": "acme"}, ["ann", "bob", "cy", "dee"], 1)
    heads = await _claim(ctx, now)
    by = {(c.webhook_id, c.user_id): c for c in heads}
    stolen = by["wh_1", "cy"]
    async with ctx.store.write() as tx:
        await tamper.take_lease(tx, "wh_1", "cy", "w2")
        await tamper.delete_webhook_row(tx, "wh_2")
    results = [
        _delivered(by["wh_1", "ann"]),
        result_of(by["wh_1", "bob"], status="pending"),
        result_of(by["wh_1", "dee"], status="dead"),
        _delivered(stolen),
        *(_delivered(c) for (hook, _u), c in by.items() if hook == "wh_2"),
    ]
    await _record(ctx, results, now)
    entries = await _entries(ctx, "acme")
    assert [(e.fields.seq, e.fields.user_id, e.fields.webhook_id) for e in entries] == [
        (1, "ann", "wh_1")
    ]
    assert [(v.entries, v.first_break) for v in await ledger_service.verify(ctx)] == [(1, None)]


async def test_two_records_starting_the_same_chain_both_land_on_it(
    ctx: Context, caplog: pytest.LogCaptureFixture
) -> None:
    """An organization's first entries, recorded by two workers at once: the second's
    statement fails on the first's keys once that commits, and its batch is recorded again
    (``batches.bisect``) from the head that now exists, which the log says. No entry lost,
    one chain."""
    caplog.set_level(logging.INFO, logger="consent_relay.storage")
    now = await _queued(ctx, {"wh_1": "acme"}, ["ann", "bob", "cy"], 1)
    heads = await _claim(ctx, now)
    first, rest = heads[0], heads[1:]

    async def waiting() -> bool:
        async with ctx.store.read() as tx:
            return await inspect.sessions_waiting_for_locks(tx) > 0

    async def first_record(raw: Any) -> asyncio.Task[batches.Recorded]:
        assert await ledger.append_pg(raw, [_delivered(first)], NOW) == 1
        second = asyncio.create_task(_record(ctx, [_delivered(c) for c in rest], now))
        await eventually(waiting, within=10, what="the second record waiting on the first")
        return second  # and the first commits

    second = await ctx.store.pg_transaction(first_record)
    recorded = await asyncio.wait_for(second, 20)
    assert sorted(r.claimed.id for r in recorded.kept) == sorted(c.id for c in rest)
    assert (recorded.failed, recorded.noted) == ([], [])
    entries = await _entries(ctx, "acme")
    assert [e.fields.seq for e in entries] == [1, 2, 3]
    assert entries[0].fields.delivery_id == first.id
    assert [(v.entries, v.first_break) for v in await ledger_service.verify(ctx)] == [(3, None)]
    (split,) = [r.getMessage() for r in caplog.records if "in halves" in r.getMessage()]
    assert split.startswith("a batch of 2 failed, tried again in halves: UniqueViolationError"), (
        split
    )
