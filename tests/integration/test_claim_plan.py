"""The claim walks each served webhook's due queues through their index, and finds each head
through its queue's index, whatever the history holds.

Left to itself, SQLite's planner walked every delivery of the webhook (delivered and dead
ones included) and sorted them, so each claim took time in proportion to the history; these
tests read the plans after a history of delivered deliveries, with and without statistics.

Without statistics means a table never analyzed (``tamper.forget_statistics``), not whatever
an earlier test left: the PostgreSQL test database outlives each test, so the tests forget
(or gather) the statistics themselves and leave them gathered."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import databases, inspect, queue, tamper
from tests.plans import read_plan
from tests.rows import webhook_row


async def _history(ctx: Context, delivered: int, due: int, *, analyze: bool) -> None:
    """``delivered`` finished deliveries and ``due`` due heads, all on one enabled webhook."""
    async with ctx.store.write() as tx:
        await tamper.insert_rows(tx, "webhooks", [webhook_row()])
        items = [("acme", "wh_1", f"msg_{n}", f"u{n}") for n in range(delivered + due)]
        await queue.append(tx, items, 0, "2026-01-01T00:00:00.000Z")
        first = [d["id"] for d in await inspect.rows(tx, "deliveries")][:delivered]  # pk order
        await tamper.set_delivery_status(tx, "delivered", ids=first, clear_due=True)
        if analyze:
            await databases.analyze(tx)
        elif not ctx.store.is_sqlite:  # (a new SQLite database has none)
            await tamper.forget_statistics(
                tx, ["deliveries", "delivery_queues", "webhooks", "webhook_flow"]
            )


def _scanned(node: dict[str, Any]) -> set[str]:
    """The tables a PostgreSQL plan reads whole (sequential scans)."""
    found = {str(node["Relation Name"])} if node.get("Node Type") == "Seq Scan" else set()
    for child in node.get("Plans", []):
        found |= _scanned(child)
    return found


@pytest.mark.parametrize("analyze", [False, True], ids=["no-statistics", "statistics"])
async def test_the_claim_walks_the_due_index(ctx: Context, analyze: bool) -> None:
    await _history(ctx, delivered=3000, due=50, analyze=analyze)
    plan = await read_plan(ctx, inspect.claim_plan)
    # The due queues through the webhook's due index, each head through its queue's index:
    # never the webhook's history (ix_deliveries_webhook walks it), never a scan.
    if ctx.store.is_sqlite:
        assert "INDEX ix_delivery_queues_webhook_due (webhook_id=?" in plan, plan
        assert "USING INDEX ix_deliveries_queue" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        assert "SCAN d" not in plan, plan
    else:
        # Without statistics PostgreSQL may fetch the due queues by bitmap and sort them:
        # work in proportion to what is due, not to the history, which it never reads.
        assert '"Index Name": "ix_delivery_queues_webhook_due"' in plan, plan
        assert '"Index Name": "ix_deliveries_queue"' in plan, plan
        assert "ix_deliveries_webhook" not in plan, plan
        # The webhooks it serves are read whole (a handful of rows; no index serves
        # "enabled, not rate-limited"); no other table is ever scanned.
        assert _scanned(json.loads(plan)[0]["Plan"]) <= {"webhooks"}, plan


@pytest.mark.parametrize("joins", ["planned", "hashed"])
@pytest.mark.parametrize("analyze", [False, True], ids=["no-statistics", "statistics"])
async def test_a_claim_over_a_large_backlog_reads_no_table_whole(
    ctx: Context, analyze: bool, joins: str
) -> None:
    """300 due heads beside 10,000 queues with nothing due (users whose deliveries are all
    delivered): a claim of 100 reads the due heads it may take (its 200 candidates; all 300
    when PostgreSQL, without statistics, fetches them by bitmap and sorts them) and those
    it locks and leases, never the table, whatever join the planner would pick. The claim
    locks each candidate through the row version its walk read, and leases it through the
    version locked (TID scans). It used to find them again through the queue's key (701
    rows read here, planned either way), and where its costs made the planner hash that
    join (a table of 10,000 queues filled by the bench) it read every queue each claim (1.3
    of a claim's 4.2 ms there). ``hashed`` has the planner avoid nested loops: the reads
    stay the same."""
    await _history(ctx, delivered=10_000, due=300, analyze=analyze)
    if ctx.store.is_sqlite:
        plan = await read_plan(ctx, inspect.claim_plan)
        assert "INDEX ix_delivery_queues_webhook_due (webhook_id=?" in plan, plan
        assert "SCAN delivery_queues" not in plan, plan
        return
    async with ctx.store.write() as tx:
        leased, read, _scans = await inspect.claim_reads(
            tx, limit=100, now_ms=10**13, lease="big", nested_loops=joins == "planned"
        )
    assert leased == 100
    assert read <= 300 + 100 + 100 + 2, read  # (+2: the walk from one webhook to the next)


@pytest.mark.parametrize("joins", ["planned", "hashed"])
@pytest.mark.parametrize("analyze", [False, True], ids=["no-statistics", "statistics"])
async def test_a_rate_limited_take_reads_only_its_webhooks_queues(
    ctx: Context, analyze: bool, joins: str
) -> None:
    """A take of 100 of a rate-limited webhook's 150 due queues, beside another webhook's
    10,000: it reads that webhook's due queues and the ones it leases, never the table,
    whatever join the planner would pick. (It leased the picked queues by their key, a
    join: where its costs made PostgreSQL hash it, as on a table of 10,000 queues filled
    by the bench, it read every queue of every webhook each take, 10,250 rows here with
    ``hashed``, which has the planner avoid nested loops.)"""
    async with ctx.store.write() as tx:
        await tamper.insert_rows(
            tx,
            "webhooks",
            [
                {**webhook_row("wh_1"), "rate_limit": 1000.0},
                {**webhook_row("wh_2"), "rate_limit": None},
            ],
        )
        items = [("acme", "wh_2", f"msg_b{n}", f"u{n}") for n in range(10_000)]
        items += [("acme", "wh_1", f"msg_a{n}", f"u{n}") for n in range(150)]
        await queue.append(tx, items, 0, "2026-01-01T00:00:00.000Z")
        if analyze:
            await databases.analyze(tx)
        elif not ctx.store.is_sqlite:
            await tamper.forget_statistics(tx, ["delivery_queues", "webhooks"])
    if ctx.store.is_sqlite:  # the picked queues leased by rowid
        plan = await read_plan(ctx, inspect.take_plan)
        assert "SCAN delivery_queues" not in plan, plan
        assert "SCAN q" not in plan, plan
        return
    async with ctx.store.write() as tx:
        leased, read = await inspect.take_reads(
            tx,
            webhook_id="wh_1",
            n=100,
            now_ms=10**13,
            lease="take",
            nested_loops=joins == "planned",
        )
    assert leased == 100
    assert read <= 150 + 100, read


async def test_a_claim_planned_on_a_small_table_finds_heads_through_the_queue_index(
    ctx: Context,
) -> None:
    """On tables of a few rows with no statistics, the two indexes a head's lookup could
    take cost the same to PostgreSQL's planner; the worker's claim is a prepared statement,
    which may keep the plan it settled on while the tables were that small (with autovacuum
    off nothing replans it). With ``ix_deliveries_queue`` unique (migration 0013) the plan
    finds each head through it; before, it took ``ix_deliveries_webhook_status`` and walked
    the webhook's history for each head (the latency benchmark's claims grew from 2 to 70 ms
    within a run)."""
    await _history(ctx, delivered=15, due=5, analyze=False)
    plan = await read_plan(ctx, inspect.claim_plan)
    if ctx.store.is_sqlite:
        assert "USING INDEX ix_deliveries_queue" in plan, plan
    else:
        assert '"Index Name": "ix_deliveries_queue"' in plan, plan
        assert "ix_deliveries_webhook" not in plan, plan


@pytest.mark.parametrize("beside", ["held backlogs", "idle webhooks"])
async def test_what_the_claim_does_not_serve_it_does_not_read(ctx: Context, beside: str) -> None:
    """Beside ten due heads of a served webhook: the due heads of a disabled, a paused and a
    rate-limited webhook (3,000 each), which stay due; or 500 webhooks with nothing to send.
    The claim (of ten: full, so the rate-limited webhooks' turn is not asked for) takes the
    ten and costs what it costs without them, but for a step a held webhook: measured as the
    queue rows its scans read and the scans begun (PostgreSQL) or SQLite's steps. (It used to
    walk one index of all due heads and skip the held ones, every claim: on PostgreSQL a heap
    fetch each; then, read a webhook at a time, it probed every webhook, idle or not.)"""
    served = [("acme", "wh_1", f"msg_{n}", f"served{n}") for n in range(10)]
    held = [
        ("acme", hook, f"msg_{hook}_{n}", f"u{n}")
        for hook in ("wh_off", "wh_paused", "wh_limited")
        for n in range(3000)
    ]
    async with ctx.store.write() as tx:
        hooks = [
            {**webhook_row(hook), "rate_limit": None}
            for hook in ("wh_1", "wh_off", "wh_paused", "wh_limited")
        ]
        hooks[1]["enabled"] = False
        hooks[3]["rate_limit"] = 1.0  # and no token in its bucket
        await tamper.insert_rows(tx, "webhooks", hooks)
        await tamper.insert_rows(
            tx,
            "webhook_flow",
            [{"webhook_id": "wh_paused", "tokens": 0.0, "refilled_ms": 0,
              "paused_until_ms": 10**14, "paused_reason": "Retry-After"},
             {"webhook_id": "wh_limited", "tokens": 0.0, "refilled_ms": 10**14,
              "paused_until_ms": None, "paused_reason": None}],
        )  # fmt: skip
        await queue.append(tx, served, 0, "2026-01-01T00:00:00.000Z")
        await databases.analyze(tx)

    async def claim(now_ms: int, lease: str) -> tuple[int, ...]:
        async with ctx.store.write() as tx:
            if ctx.store.is_sqlite:
                return await inspect.claim_steps(tx, limit=10, now_ms=now_ms, lease=lease)
            return await inspect.claim_reads(tx, limit=10, now_ms=now_ms, lease=lease)

    alone = await claim(10**13, "first")
    async with ctx.store.write() as tx:
        if beside == "held backlogs":
            await queue.append(tx, held, 0, "2026-01-01T00:00:00.000Z")
        else:
            idle = [{**webhook_row(f"wh_idle_{n:03d}"), "rate_limit": None} for n in range(500)]
            await tamper.insert_rows(tx, "webhooks", idle)
        await databases.analyze(tx)
    after = await claim(10**13 + 120_000, "second")  # the first leases have run out
    assert alone[0] == after[0] == 10
    if ctx.store.is_sqlite:
        assert after[1] <= 1.5 * alone[1] + 2, (alone, after)
    else:
        # The served queues, each read as a candidate, locked, then leased; one entry a
        # webhook on the clock (the walk from one to the next): the held ones' three.
        assert alone[1] <= 3 * 10 + 2, (alone, after)
        assert after[1] <= alone[1] + 3 + 1, (alone, after)
        # Scans begun: a few a leased queue (its lock, its lease) and one a webhook on the
        # clock; never one a webhook configured (500 idle ones beside).
        assert after[2] <= 3 * 10 + 4 + 3, (alone, after)
    async with ctx.store.read() as tx:
        leased = [d for d in await inspect.deliveries_with_clock(tx) if d["lease_owner"]]
    assert sorted(d["user_id"] for d in leased) == sorted(f"served{n}" for n in range(10))
    assert {d["lease_owner"] for d in leased} == {"second"}


@pytest.mark.parametrize(
    ("due", "limit", "taken"),
    [
        # webhook -> the due times of its queues' heads; the claim takes the oldest of all
        ({"wh_a": [1, 2, 3, 10, 11], "wh_b": [4, 5], "wh_c": [6, 7, 8, 9]}, 6, [1, 2, 3, 4, 5, 6]),
        ({"wh_a": [5, 6], "wh_b": [1, 9], "wh_c": [2, 3]}, 3, [1, 2, 3]),
        ({"wh_a": [1, 2], "wh_b": [3]}, 10, [1, 2, 3]),  # fewer due than the limit: all
        ({"wh_a": [1, 20_000], "wh_b": [2]}, 10, [1, 2]),  # not yet due: left
    ],
)
async def test_the_claim_takes_the_oldest_due_across_webhooks(
    ctx: Context, due: dict[str, list[int]], limit: int, taken: list[int]
) -> None:
    async with ctx.store.write() as tx:
        await tamper.insert_rows(tx, "webhooks", [webhook_row(hook) for hook in due])
        for hook, times in due.items():
            for at in times:
                item = ("acme", hook, f"msg_{hook}_{at}", f"u{at}")
                await queue.append(tx, [item], at, "2026-01-01T00:00:00.000Z")
    async with ctx.store.write() as tx:
        leased = await queue.claim(
            tx, limit=limit, now_ms=10_000, lease="l", lease_ms=60_000, with_messages=False
        )
    assert sorted(int(c.user_id[1:]) for c in leased) == taken
