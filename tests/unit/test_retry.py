"""Retry policy: schedule, jitter bounds, Retry-After handling, and the five-minute promise."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from consent_relay.delivery.retry import (
    DEFAULT_JITTER,
    DEFAULT_SCHEDULE,
    next_delay,
    parse_retry_after,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ALMOST_ONE = math.nextafter(1.0, 0.0)


@pytest.mark.parametrize(
    ("failed_attempts", "expected"),
    [(1, 5.0), (2, 15.0), (3, 30.0), (4, 60.0), (5, 110.0), (6, None), (7, None)],
)
def test_schedule_without_jitter(failed_attempts: int, expected: float | None) -> None:
    assert next_delay(failed_attempts, DEFAULT_SCHEDULE, jitter=0.1, rand=0.5) == expected


@pytest.mark.parametrize(
    ("rand", "expected"),
    [(0.0, 27.0), (0.25, 28.5), (0.5, 30.0), (0.75, 31.5), (ALMOST_ONE, 33.0)],
)
def test_jitter_spreads_uniformly_between_bounds(rand: float, expected: float) -> None:
    assert next_delay(3, DEFAULT_SCHEDULE, jitter=0.1, rand=rand) == pytest.approx(expected)


@pytest.mark.parametrize("failed_attempts", [1, 2, 3, 4, 5])
def test_jitter_never_leaves_bounds(failed_attempts: int) -> None:
    base = DEFAULT_SCHEDULE[failed_attempts - 1]
    low = next_delay(failed_attempts, DEFAULT_SCHEDULE, jitter=0.1, rand=0.0)
    high = next_delay(failed_attempts, DEFAULT_SCHEDULE, jitter=0.1, rand=ALMOST_ONE)
    assert low == pytest.approx(base * 0.9)
    assert high is not None
    assert base * 1.0999 < high <= base * 1.1


@pytest.mark.parametrize(
    ("failed_attempts", "schedule", "expected"),
    [
        pytest.param(1, [], None, id="empty-schedule-dead-at-once"),
        pytest.param(1, [2.0], 2.0, id="single-retry"),
        pytest.param(2, [2.0], None, id="single-retry-then-dead"),
        pytest.param(1, [0.0], 0.0, id="zero-delay"),
    ],
)
def test_custom_schedules(
    failed_attempts: int, schedule: list[float], expected: float | None
) -> None:
    assert next_delay(failed_attempts, schedule, jitter=0.1, rand=0.5) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"failed_attempts": 0, "rand": 0.5, "jitter": 0.1}, "failed_attempts", id="0"),
        pytest.param({"failed_attempts": 1, "rand": -0.1, "jitter": 0.1}, "rand", id="rand<0"),
        pytest.param({"failed_attempts": 1, "rand": 1.5, "jitter": 0.1}, "rand", id="rand>1"),
        pytest.param({"failed_attempts": 1, "rand": 0.5, "jitter": -0.1}, "jitter", id="jitter<0"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next_delay(
            int(kwargs["failed_attempts"]),
            DEFAULT_SCHEDULE,
            jitter=kwargs["jitter"],
            rand=kwargs["rand"],
        )


# failed_attempts=2 with rand=0.5: the jittered delay is 15 s, so Retry-After clamps to [15, 30].
@pytest.mark.parametrize(
    ("status_code", "retry_after", "expected"),
    [
        pytest.param(429, 20.0, 20.0, id="429-within-range"),
        pytest.param(503, 20.0, 20.0, id="503-within-range"),
        pytest.param(429, 1.0, 15.0, id="429-shorter-raised-to-delay"),
        pytest.param(503, 0.0, 15.0, id="503-zero-raised-to-delay"),
        pytest.param(429, 3600.0, 30.0, id="429-longer-capped-at-double"),
        pytest.param(503, 30.0, 30.0, id="503-exactly-double"),
        pytest.param(429, None, 15.0, id="429-without-header"),
        pytest.param(500, 20.0, 15.0, id="500-ignored"),
        pytest.param(502, 3600.0, 15.0, id="502-ignored"),
        pytest.param(404, 20.0, 15.0, id="404-ignored"),
        pytest.param(None, 20.0, 15.0, id="no-response-ignored"),
    ],
)
def test_retry_after_clamping(
    status_code: int | None, retry_after: float | None, expected: float
) -> None:
    delay = next_delay(
        2,
        DEFAULT_SCHEDULE,
        jitter=0.1,
        rand=0.5,
        status_code=status_code,
        retry_after=retry_after,
    )
    assert delay == expected


def test_retry_after_clamps_around_the_jittered_delay() -> None:
    # rand=0 makes the delay 13.5 s; the clamp range follows it: [13.5, 27].
    def delay(retry_after: float) -> float | None:
        return next_delay(
            2, DEFAULT_SCHEDULE, jitter=0.1, rand=0.0, status_code=429, retry_after=retry_after
        )

    assert delay(1.0) == pytest.approx(13.5)
    assert delay(20.0) == 20.0
    assert delay(99.0) == pytest.approx(27.0)


def test_retry_after_does_not_revive_a_dead_delivery() -> None:
    assert (
        next_delay(6, DEFAULT_SCHEDULE, jitter=0.1, rand=0.5, status_code=429, retry_after=5.0)
        is None
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="seconds"),
        pytest.param(" 7 ", 7.0, id="seconds-with-spaces"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("Wed, 01 May 2024 12:00:30 GMT", 30.0, id="imf-fixdate"),
        pytest.param("Wednesday, 01-May-24 12:01:00 GMT", 60.0, id="rfc850-date"),
        pytest.param("Wed May  1 12:02:00 2024", 120.0, id="asctime-date"),
        pytest.param("Wed, 01 May 2024 14:00:10 +0200", 10.0, id="numeric-zone"),
        pytest.param("Wed, 01 May 2024 11:00:00 GMT", 0.0, id="past-date-is-now"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="blank"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="decimal"),
        pytest.param("soon", None, id="garbage-word"),
        pytest.param("12 parsecs", None, id="garbage-number-word"),
        pytest.param("\u0661\u0662", None, id="non-ascii-digits"),
        pytest.param("Wed, 99 Foo 2024 12:00:00 GMT", None, id="bad-date"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_parse_retry_after_with_naive_now_reads_it_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", naive) == 30.0


class FakeClock:
    """A clock the test moves by hand: nothing sleeps for real."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_worst_case_every_retry_starts_within_five_minutes_then_dead() -> None:
    request_timeout = 10.0
    clock = FakeClock(NOW)
    starts: list[datetime] = []
    failed = 0
    while True:
        starts.append(clock.now)
        clock.advance(request_timeout)  # the attempt runs into its timeout and fails
        failed += 1
        delay = next_delay(failed, DEFAULT_SCHEDULE, jitter=DEFAULT_JITTER, rand=ALMOST_ONE)
        if delay is None:
            break
        clock.advance(delay)

    offsets = [(start - starts[0]).total_seconds() for start in starts]
    assert len(starts) == 6
    assert failed == 6
    assert offsets == pytest.approx([0.0, 15.5, 42.0, 85.0, 161.0, 292.0], abs=1e-6)
    assert all(offset <= 300.0 for offset in offsets)
