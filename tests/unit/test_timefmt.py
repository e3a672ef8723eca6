"""Timestamps: one text form, and a fast ``now_ts`` that agrees with ``format_ts``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from consent_relay.domain.timefmt import format_ts, now_ts, parse_ts


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "2026-01-02T03:04:05.678Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z"),
        (
            datetime(2026, 1, 2, 4, 4, 5, 999999, tzinfo=timezone(timedelta(hours=1))),
            "2026-01-02T03:04:05.999Z",
        ),
    ],
)
def test_format_ts(moment: datetime, text: str) -> None:
    assert format_ts(moment) == text


@pytest.mark.parametrize(
    ("now", "text"),
    [
        (1_790_000_000.0, "2026-09-21T14:13:20.000Z"),
        (1_790_000_000.25, "2026-09-21T14:13:20.250Z"),
        (1_790_000_000.9999, "2026-09-21T14:13:20.999Z"),
        (1_790_000_001.5, "2026-09-21T14:13:21.500Z"),  # the next second: the cache moves on
        (1_790_000_000.5, "2026-09-21T14:13:20.500Z"),  # and back (a clock step)
    ],
)
def test_now_ts_formats_the_clock_like_format_ts(
    monkeypatch: pytest.MonkeyPatch, now: float, text: str
) -> None:
    monkeypatch.setattr(time, "time", lambda: now)
    assert now_ts() == text == format_ts(datetime.fromtimestamp(now, UTC))


def test_now_ts_is_now() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    value = parse_ts(now_ts())
    after = datetime.now(UTC)
    assert before <= value <= after
