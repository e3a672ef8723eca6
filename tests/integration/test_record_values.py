"""What a record writes reads back exactly as it was given, on SQLite and PostgreSQL.

PostgreSQL takes a batch's attempts, the deliveries' new state and the ledger's entries as
one JSON array a statement (``queue_pg``), each value read back out of JSON by the database;
SQLite binds them a row at a time (``queue_sqlite``): on both, a text that looks like JSON, a
number or null, escapes, characters beyond the Basic Multilingual Plane and missing values
must all arrive as the worker had them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from consent_relay.runtime import Context
from consent_relay.storage import batches, codec, inspect
from consent_relay.storage.queue import Claimed, Result
from tests.integration.test_poisoned_batches import _heads
from tests.integration.test_poisoned_batches import _result as poisoned_batches_result

NOW = "2026-01-01T00:00:00.000Z"

# (response body, error, status code, response bytes, request header value): one a row.
VALUES = [
    ("", None, 204, 0, "plain"),
    ('{"ok": true, "n": [1, 2.5, null]}', None, 200, 33, '{"looks": "like json"}'),
    ("123", "null", 201, 3, "123"),
    ("null", "true", 202, 2**40, "null"),
    ('quote " backslash \\ slash / \b\f\n\r\t', 'a "quoted" error\\n', 299, None, 'a "b" \\ c'),
    ("é 中文 \u2028 \ufffd 😀 𝄞", "ü 🚀", 200, 27, "ünï 😀"),
    ("x" * 4096, "e" * 500, 200, 10**9, "v" * 300),
]


def _result(item: Claimed, n: int) -> Result:
    body, error, status_code, response_bytes, header = VALUES[n]
    return poisoned_batches_result(
        item,
        body,
        "delivered",
        due_ms=None,
        outcome="OK",
        duration_ms=n,
        status_code=status_code,
        request_headers={"webhook-id": item.message_id, "x-odd": header},
        error=error,
        response_bytes=response_bytes,
        payload_sha256=hashlib.sha256(body.encode()).hexdigest(),
    )


@pytest.mark.parametrize("rows", [1, len(VALUES)], ids=["one", "all"])
async def test_what_a_record_writes_reads_back_as_given(
    ctx: Context, org: tuple[str, str], rows: int
) -> None:
    _hook, claimed = await _heads(ctx, org[0], users=len(VALUES))
    results = [_result(item, n) for n, item in enumerate(claimed[:rows])]
    recorded = await batches.record(ctx.store, results, now_ms=ctx.clock_ms(), now=NOW)
    assert len(recorded.kept) == rows
    assert recorded.failed == recorded.noted == []
    async with ctx.store.read() as tx:
        attempts = {a["delivery_id"]: a for a in await inspect.rows(tx, "attempts")}
        entries = {e["delivery_id"]: e for e in await inspect.rows(tx, "ledger_entries")}
        deliveries = {d["pk"]: d for d in await inspect.rows(tx, "deliveries")}
    assert len(attempts) == len(entries) == rows
    for r in results:
        c = r.claimed
        attempt: dict[str, Any] = attempts[c.id]
        assert (
            attempt["id"],
            attempt["attempt_number"],
            attempt["started_at"],
            attempt["duration_ms"],
            attempt["outcome"],
            attempt["status_code"],
            attempt["response_body"],
            attempt["error"],
            attempt["response_bytes"],
        ) == (
            r.attempt_id,
            1,
            NOW,
            r.duration_ms,
            "OK",
            r.status_code,
            r.response_body,
            r.error,
            r.response_bytes,
        )
        assert codec.loads(attempt["request_headers"]) == r.request_headers
        entry = entries[c.id]
        assert (
            entry["message_id"],
            entry["user_id"],
            entry["webhook_id"],
            entry["status_code"],
            entry["payload_sha256"],
            entry["delivered_at"],
        ) == (c.message_id, c.user_id, c.webhook_id, r.status_code, r.payload_sha256, NOW)
        row = deliveries[c.pk]
        assert (row["status"], row["attempt_count"], row["last_outcome"], row["updated_at"]) == (
            "delivered",
            1,
            "OK",
            NOW,
        )
