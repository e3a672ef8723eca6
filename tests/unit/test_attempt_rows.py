"""An attempt as each database's record takes it: SQLite binds ``attempt_values`` by position
(``ATTEMPT_NAMES``' order), PostgreSQL reads ``attempt_row``'s keys as the columns of the
record's JSON recordset. The two are built separately (the row directly, for speed), so this
holds them to the same values, column by column, and the row's keys to the statement's."""

from __future__ import annotations

import re

import pytest

from consent_relay.storage import queue_pg
from consent_relay.storage.queue import Claimed, Result


def _result(**changes: object) -> Result:
    claimed = Claimed(
        pk=2**40,
        id="dlv_1",
        webhook_id="wh_1",
        message_id="msg_1",
        user_id='user "quoted" \u00e9\U0001f600',
        seq=7,
        attempt_count=3,
        lease="host:1:wk:ls",
        subject="user",
    )
    fields: dict[str, object] = {
        "claimed": claimed,
        "status": "delivered",
        "due_ms": None,
        "outcome": "ok",
        "attempt_id": "atm_1",
        "started_at": "2026-12-06T19:00:00.123Z",
        "duration_ms": 12,
        "status_code": 204,
        "response_body": "",
        "request_headers": {"Content-Type": "application/json", "X-Secret": "[redacted]"},
        "error": None,
        "response_bytes": 0,
    }
    fields.update(changes)
    return Result(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "result",
    [
        _result(),
        _result(
            status="pending",
            due_ms=5,
            outcome="http_error",
            status_code=500,
            response_body='{"a": "\\n"}',
            error="HTTP 500",
            response_bytes=2**40,
        ),
        _result(status_code=None, response_body=None, request_headers=None, response_bytes=None),
        _result(outcome="timeout", error="TimeoutError: \u0000?", status_code=None),
    ],
)
def test_the_row_holds_the_same_values_as_the_positional_columns(result: Result) -> None:
    by_position = dict(zip(queue_pg.ATTEMPT_NAMES, queue_pg.attempt_values(result), strict=True))
    assert queue_pg.attempt_row(result) == {"pk": result.claimed.pk, **by_position}
    assert list(queue_pg.attempt_row(result)) == ["pk", *queue_pg.ATTEMPT_NAMES]


def test_the_rows_keys_are_the_columns_the_record_reads() -> None:
    found = re.search(r"json_to_recordset\(\$3::json\)\s+AS a\(([^)]*)\)", queue_pg.RECORD)
    assert found is not None
    columns = [part.split()[0] for part in found.group(1).split(",")]
    assert columns == list(queue_pg.attempt_row(_result()))
