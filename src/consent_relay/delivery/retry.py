"""When to try a failed delivery again, and when to give up (docs/delivery-contract.md).

Pure functions: the clock (``now``) and the randomness (``rand``) are passed in, so the policy can
be tested exactly and the worker decides where both come from.

The default schedule 5, 15, 30, 60, 110 s with at most +10 % jitter and a 10 s request timeout
puts the start of the fifth retry at 292 s, inside the five minutes promised to receivers:

    attempt 1 starts at 0 s, each attempt takes <= 10 s, each wait is <= 1.1 x schedule[i]
    retry 5 starts <= 5 x 10 + 1.1 x (5 + 15 + 30 + 60 + 110) = 50 + 242 = 292 s
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

DEFAULT_SCHEDULE: tuple[float, ...] = (5.0, 15.0, 30.0, 60.0, 110.0)
DEFAULT_JITTER = 0.1

# Only these statuses mean "come back later"; a Retry-After on anything else is not a request to
# wait, so honouring it would just let a receiver stretch our schedule for no reason.
RETRY_AFTER_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when absent or unreadable.

    The header is either a non-negative integer number of seconds or an HTTP-date; a date in the
    past means "now" (0 s). Anything else is ignored rather than trusted.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # HTTP-dates are always GMT; the asctime form carries no zone, so read it as UTC.
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def jittered(delay: float, *, jitter: float, rand: float) -> float:
    """``delay`` spread uniformly over ``[delay*(1-jitter), delay*(1+jitter)]`` by ``rand``.

    Jitter keeps a receiver that comes back up from being hit by every queued retry at once.
    ``rand`` = 0.5 gives ``delay`` exactly.
    """
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter}")
    return delay * (1.0 + jitter * (2.0 * rand - 1.0))


def next_delay(
    failed_attempts: int,
    schedule: Sequence[float],
    *,
    jitter: float,
    rand: float,
    status_code: int | None = None,
    retry_after: float | None = None,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the delivery is dead.

    ``failed_attempts`` counts the attempts that have failed so far (1 after the first failure).
    ``schedule[i]`` is the wait after the (i+1)-th failure, so a schedule of n delays allows n
    retries, n + 1 attempts in all.
    """
    if failed_attempts < 1:
        raise ValueError(f"failed_attempts must be >= 1, got {failed_attempts}")
    if failed_attempts > len(schedule):
        return None
    delay = jittered(schedule[failed_attempts - 1], jitter=jitter, rand=rand)
    if status_code in RETRY_AFTER_STATUSES and retry_after is not None:
        # The receiver may ask for more time, but at most double: one receiver's Retry-After must
        # not push a delivery (and the user's later ones queued behind it) far past the schedule.
        # It may not ask for less either: the schedule is also our own back-off.
        return min(max(retry_after, delay), 2.0 * delay)
    return delay
