"""No batch is poisoned by one row (storage.batches), on SQLite and PostgreSQL.

A row is made to fail in the database itself: a trigger refuses it (or, for the text a
receiver chose, the database's own refusal), and the other rows of its batch must be
recorded, the bad one's attempt recorded with a note, and the reason logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from consent_relay import ids
from consent_relay.runtime import Context
from consent_relay.schemas import EventIn, WebhookIn
from consent_relay.services import deliveries, events, webhooks
from consent_relay.storage import batches, inspect, queue, tamper
from consent_relay.storage.queue import Claimed, Result

NOW = "2026-01-01T00:00:00.000Z"
USERS = 7  # an odd batch: halves of unequal size


async def _heads_unclaimed(ctx: Context, org_id: str, users: int = USERS) -> str:
    """A webhook, one event per user (two deliveries a user: the first is due)."""
    hook = await webhooks.create_webhook(
        ctx, org_id, WebhookIn.model_validate({"url": "http://127.0.0.1:9/x"})
    )
    for n in range(users):
        await events.create_event(ctx, org_id, EventIn.model_validate({"user": {"id": f"u{n}"}}))
    return str(hook["id"])


async def _heads(ctx: Context, org_id: str, users: int = USERS) -> tuple[str, list[Claimed]]:
    """The same, all claimed."""
    hook_id = await _heads_unclaimed(ctx, org_id, users)
    async with ctx.store.write() as tx:
        claimed = await queue.claim(
            tx, limit=100, now_ms=ctx.clock_ms(), lease="worker-a", lease_ms=60_000
        )
    assert len(claimed) == users
    return hook_id, claimed


def _result(item: Claimed, body: str = "fine", status: str = "pending", **fields: Any) -> Result:
    values: dict[str, Any] = {
        "claimed": item,
        "status": status,
        "due_ms": 1 if status == "pending" else None,
        "outcome": "E_HTTP",
        "attempt_id": ids.new_id("atm"),
        "started_at": NOW,
        "duration_ms": 5,
        "status_code": 500,
        "response_body": body,
        "request_headers": {"webhook-id": item.message_id},
        "error": "HTTP 500",
        "response_bytes": len(body),
    }
    values.update(fields)
    return Result(**values)


async def _record(ctx: Context, results: list[Result]) -> batches.Recorded:
    return await batches.record(ctx.store, results, now_ms=ctx.clock_ms(), now=NOW)


@contextlib.asynccontextmanager
async def refusing(ctx: Context, table: str, column: str, value: str) -> AsyncIterator[None]:
    """A trigger that makes the database refuse the rows of ``table`` inserted with ``column``
    equal to ``value``: a row of a batch that fails in the database itself."""
    async with ctx.store.write() as tx:
        await tamper.refuse_inserts(tx, table, column, value)
    try:
        yield
    finally:
        async with ctx.store.write() as tx:  # (the PostgreSQL test database outlives the test)
            await tamper.allow_inserts(tx, table)


async def _attempts_by_delivery(ctx: Context) -> dict[str, dict[str, Any]]:
    async with ctx.store.read() as tx:
        return {row["delivery_id"]: row for row in await inspect.rows(tx, "attempts")}


async def _delivery(ctx: Context, pk: int) -> dict[str, Any]:
    async with ctx.store.read() as tx:
        [row] = await inspect.deliveries_with_clock(tx, pk=pk)
        return row


@pytest.fixture
def caplog_storage(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="consent_relay")
    return caplog


async def test_a_row_the_database_refuses_fails_alone_and_is_recorded_with_a_note(
    ctx: Context, org: tuple[str, str], caplog_storage: pytest.LogCaptureFixture
) -> None:
    _hook, claimed = await _heads(ctx, org[0])
    bad = claimed[3]
    results = [_result(c, "poison" if c is bad else "fine") for c in claimed]
    async with refusing(ctx, "attempts", "response_body", "poison"):
        recorded = await _record(ctx, results)

    assert {r.claimed.pk for r in recorded.kept} == {c.pk for c in claimed}
    assert [r.claimed.pk for r in recorded.noted] == [bad.pk]
    assert recorded.lost == recorded.failed == []
    rows = await _attempts_by_delivery(ctx)
    assert set(rows) == {c.id for c in claimed}  # one attempt each, the bad one's too
    for item in claimed:
        row = rows[item.id]
        assert (row["attempt_number"], row["status_code"], row["outcome"]) == (1, 500, "E_HTTP")
        if item is bad:
            assert (row["response_body"], row["request_headers"]) == (None, None)
            assert row["error"] == batches.UNSTORABLE_NOTE
            assert row["response_bytes"] == len("poison")
        else:
            assert (row["response_body"], row["error"], row["response_bytes"]) == (
                "fine",
                "HTTP 500",
                4,
            )
        delivery = await _delivery(ctx, item.pk)
        assert (delivery["attempt_count"], delivery["status"], delivery["lease_owner"]) == (
            1,
            "pending",
            None,
        )
    log = caplog_storage.text
    assert "row refused by test" in log  # the database's own reason
    assert bad.id in log
    assert "leases had moved on" not in log


async def test_text_a_database_cannot_take_fails_only_its_row(
    ctx: Context, org: tuple[str, str]
) -> None:
    """Unsanitized receiver text given straight to storage: a NUL (PostgreSQL's jsonb
    refuses it) and a lone surrogate (no UTF-8 encoding at all)."""
    _hook, claimed = await _heads(ctx, org[0])
    nul, surrogate = claimed[0], claimed[5]
    results = [_result(c) for c in claimed]
    results[0] = _result(nul, "a\x00b")
    results[5] = _result(surrogate, error="HTTP 500 \udcff")
    recorded = await _record(ctx, results)

    assert {r.claimed.pk for r in recorded.kept} == {c.pk for c in claimed}
    noted = {r.claimed.pk for r in recorded.noted}
    rows = await _attempts_by_delivery(ctx)
    assert set(rows) == {c.id for c in claimed}
    assert surrogate.pk in noted
    assert rows[surrogate.id]["error"] == batches.UNSTORABLE_NOTE
    if ctx.store.is_sqlite:  # SQLite takes it (json_extract cuts the text at the NUL)
        assert rows[nul.id]["response_body"].startswith("a")
    else:
        assert nul.pk in noted
        assert rows[nul.id]["error"] == batches.UNSTORABLE_NOTE
    for item in claimed[1:5]:
        assert rows[item.id]["response_body"] == "fine"


async def test_a_refused_last_attempt_still_dead_letters_and_frees_the_queue(
    ctx: Context, org: tuple[str, str]
) -> None:
    _hook, claimed = await _heads(ctx, org[0], users=3)
    bad = claimed[1]
    results = [_result(c, "poison" if c is bad else "fine", status="dead") for c in claimed]
    async with refusing(ctx, "attempts", "response_body", "poison"):
        recorded = await _record(ctx, results)
    assert [r.claimed.pk for r in recorded.noted] == [bad.pk]
    assert (await _delivery(ctx, bad.pk))["status"] == "dead"
    async with ctx.store.write() as tx:  # every queue's second delivery is its head now
        following = await queue.claim(
            tx, limit=100, now_ms=ctx.clock_ms(), lease="worker-b", lease_ms=60_000
        )
    assert sorted((c.user_id, c.seq) for c in following) == sorted(
        (c.user_id, c.seq + 1) for c in claimed
    )


async def test_a_row_refused_even_without_its_texts_still_counts_its_attempt(
    ctx: Context, org: tuple[str, str], caplog_storage: pytest.LogCaptureFixture
) -> None:
    _hook, claimed = await _heads(ctx, org[0], users=4)
    bad = claimed[2]
    results = [_result(c) for c in claimed]
    async with refusing(ctx, "attempts", "delivery_id", bad.id):
        recorded = await _record(ctx, results)
    assert {r.claimed.pk for r in recorded.kept} == {c.pk for c in claimed}
    rows = await _attempts_by_delivery(ctx)
    assert set(rows) == {c.id for c in claimed} - {bad.id}
    delivery = await _delivery(ctx, bad.pk)
    assert (delivery["attempt_count"], delivery["lease_owner"]) == (1, None)
    assert "without an attempt row" in caplog_storage.text


async def test_a_refused_ledger_entry_takes_its_whole_record_back(
    ctx: Context, org: tuple[str, str], caplog_storage: pytest.LogCaptureFixture
) -> None:
    """The ledger entry is written in the transaction that records its delivery (on
    PostgreSQL through the raw driver, storage/queue_pg.py): when the database refuses the
    entry, the delivery is not recorded either (no attempt, still leased, its next message
    not due), and the rest of the batch is."""
    _hook, claimed = await _heads(ctx, org[0], users=5)
    bad = claimed[1]
    results = [_result(c, status="delivered", outcome="ok", status_code=204) for c in claimed]
    async with refusing(ctx, "ledger_entries", "delivery_id", bad.id):
        recorded = await _record(ctx, results)
    assert [r.claimed.pk for r in recorded.failed] == [bad.pk]
    assert {r.claimed.pk for r in recorded.kept} == {c.pk for c in claimed if c is not bad}
    rows = await _attempts_by_delivery(ctx)
    assert set(rows) == {c.id for c in claimed if c is not bad}
    delivery = await _delivery(ctx, bad.pk)
    assert (delivery["status"], delivery["attempt_count"], delivery["lease_owner"]) == (
        "pending",
        0,
        "worker-a",
    )
    async with ctx.store.read() as tx:
        entries = await inspect.rows(tx, "ledger_entries")
    assert sorted(e["delivery_id"] for e in entries) == sorted(
        c.id for c in claimed if c is not bad
    )
    assert sorted(e["seq"] for e in entries) == [1, 2, 3, 4]  # one chain, no gap
    async with ctx.store.write() as tx:  # the four delivered queues moved on; not the bad one
        following = await queue.claim(
            tx, limit=100, now_ms=ctx.clock_ms(), lease="worker-b", lease_ms=60_000
        )
    assert sorted((c.user_id, c.seq) for c in following) == sorted(
        (c.user_id, c.seq + 1) for c in claimed if c is not bad
    )
    assert "row refused by test" in caplog_storage.text


@pytest.mark.parametrize(
    "taken_at",
    [(0,), (2,), (4,), (1, 3), (0, 1, 2, 3, 4), ()],
    ids=["first", "middle", "last", "two", "all", "none"],
)
async def test_a_lost_lease_is_still_told_apart(
    ctx: Context, org: tuple[str, str], taken_at: tuple[int, ...]
) -> None:
    """Results whose queue's lease moved on (here: another lease) are not recorded, wherever
    they are in the batch; the others are."""
    _hook, claimed = await _heads(ctx, org[0], users=5)
    batch = [
        dataclasses.replace(c, lease="someone-else") if n in taken_at else c
        for n, c in enumerate(claimed)
    ]
    recorded = await _record(ctx, [_result(c) for c in batch])
    assert [r.claimed.pk for r in recorded.lost] == [claimed[n].pk for n in taken_at]
    assert recorded.noted == recorded.failed == []
    assert sorted(r.claimed.pk for r in recorded.kept) == sorted(
        c.pk for n, c in enumerate(claimed) if n not in taken_at
    )
    for n, c in enumerate(claimed):
        row = await _delivery(ctx, c.pk)
        assert row["attempt_count"] == (0 if n in taken_at else 1)


async def test_a_replay_with_one_refused_dead_letter_replays_the_others(
    ctx: Context, org: tuple[str, str], caplog_storage: pytest.LogCaptureFixture
) -> None:
    hook_id, claimed = await _heads(ctx, org[0], users=5)
    await _record(ctx, [_result(c, status="dead") for c in claimed])
    bad = claimed[2]
    async with refusing(ctx, "deliveries", "message_id", bad.message_id):
        count = await deliveries.replay(ctx, org[0], hook_id)
    assert count == 4
    for item in claimed:
        row = await _delivery(ctx, item.pk)
        assert (row["replayed_by"] is None) == (item is bad)
    async with ctx.store.read() as tx:
        replays = [d for d in await inspect.deliveries_with_clock(tx) if d["replay_of"] is not None]
    assert sorted(r["replay_of"] for r in replays) == sorted(c.id for c in claimed if c is not bad)
    assert f"dead letter {bad.id} could not be replayed" in caplog_storage.text
    assert "row refused by test" in caplog_storage.text


async def _make_unreadable(ctx: Context, monkeypatch: pytest.MonkeyPatch, message_id: str) -> None:
    """A message the database cannot hand back. SQLite: text that is not UTF-8 (as something
    else than the relay could write). PostgreSQL's text is always UTF-8: there the message is
    made invalid JSON and the claim's reads of messages parse it (``CAST AS jsonb``)."""
    async with ctx.store.write() as tx:
        await tamper.make_message_unreadable(tx, message_id)
    if ctx.store.is_sqlite:
        return
    monkeypatch.setattr(queue, "claim_sql", tamper.parsing_claim_sql(queue.claim_sql))
    monkeypatch.setattr(queue, "messages_by_id", tamper.messages_by_id_parsed)


async def test_an_unreadable_message_fails_only_its_own_claim(
    ctx: Context,
    org: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog_storage: pytest.LogCaptureFixture,
) -> None:
    await _heads_unclaimed(ctx, org[0])
    async with ctx.store.read() as tx:  # in pk order
        due = [d for d in await inspect.deliveries_with_clock(tx) if d["due_ms"] is not None]
    assert len(due) == USERS
    bad = due[2]
    await _make_unreadable(ctx, monkeypatch, bad["message_id"])
    now = ctx.clock_ms()
    with pytest.raises(Exception):  # noqa: B017, PT011 - the plain claim fails as a whole
        async with ctx.store.write() as tx:
            await queue.claim(tx, limit=100, now_ms=now, lease="plain", lease_ms=60_000)

    claimed = await batches.claim(ctx.store, limit=100, now_ms=now, lease="w", lease_ms=60_000)
    assert sorted(c.pk for c in claimed) == sorted(d["pk"] for d in due if d is not bad)
    assert all(c.message is not None and c.message["parameters"] for c in claimed)
    row = await _delivery(ctx, bad["pk"])  # leased: tried again when the lease runs out
    assert (row["lease_owner"], row["due_ms"], row["attempt_count"]) == ("w", now + 60_000, 0)
    assert f"message {bad['message_id']}" in caplog_storage.text
    assert "cannot be read" in caplog_storage.text
