"""Receivers in trouble: what a 410 Gone or a Retry-After asks of us. Pure functions (the
clock is passed in), tested by tables. (The token bucket of a webhook's rate limit is the
claim's: ``storage.flow.refill``.)

- **410 Gone**: the receiver says the endpoint is gone for good (Standard Webhooks asks
  senders to stop). We disable the webhook; the delivery that got it stays pending and is
  not counted as a retry: it goes first when someone enables the webhook again.
- **Retry-After** on a 429 or 503: the whole webhook waits (every user's deliveries), for at
  least ``MIN_PAUSE_S`` (a ``Retry-After: 0`` loop would hammer the receiver) and at most
  ``MAX_PAUSE_S`` (a receiver cannot park our queue for hours). The attempt is not counted
  as a retry either: the receiver asked us to wait, it did not fail. But not for ever: after
  ``MAX_HELD_ATTEMPTS`` holds a delivery's Retry-After is honoured as a retry delay only (the
  retry schedule counts it, and a receiver that only ever says "later" ends in a dead letter
  a person can see, after up to ~16 hours of pauses, instead of holding the user's queue).
"""

from __future__ import annotations

from dataclasses import dataclass

from consent_relay.delivery.retry import RETRY_AFTER_STATUSES

MIN_PAUSE_S = 1.0
MAX_PAUSE_S = 600.0  # ten minutes
MAX_HELD_ATTEMPTS = 100  # Retry-After holds one delivery may take before they count


@dataclass(frozen=True)
class Hold:
    """An attempt the receiver asked us to hold: not counted as a retry."""

    due_in_s: float  # the delivery is due again this long from now
    pause_s: float | None = None  # pause the whole webhook this long
    disable: bool = False  # disable the webhook (410 Gone)


def pause_seconds(retry_after: float) -> float:
    """A Retry-After (seconds), bounded to [MIN_PAUSE_S, MAX_PAUSE_S]."""
    return min(max(retry_after, MIN_PAUSE_S), MAX_PAUSE_S)


def hold_for(
    status_code: int | None, retry_after: float | None, held_so_far: int = 0
) -> Hold | None:
    """What the receiver's answer asks of us; None for an ordinary failure (the retry
    schedule decides). ``held_so_far``: the delivery's holds until now."""
    if status_code == 410:
        return Hold(due_in_s=0.0, disable=True)
    if (
        status_code in RETRY_AFTER_STATUSES
        and retry_after is not None
        and held_so_far < MAX_HELD_ATTEMPTS
    ):
        pause = pause_seconds(retry_after)
        return Hold(due_in_s=pause, pause_s=pause)
    return None
