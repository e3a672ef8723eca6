"""Flow control's pure rules (issue 14): holds on 410 and Retry-After, pause bounds, the token
bucket, and what a message is about (for superseding)."""

from __future__ import annotations

from typing import Any

import pytest

from consent_relay.delivery.flow import MAX_HELD_ATTEMPTS, Hold, hold_for, pause_seconds
from consent_relay.storage.flow import refill, subject_of


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (410, None, Hold(due_in_s=0.0, disable=True)),
        (410, 30.0, Hold(due_in_s=0.0, disable=True)),
        (429, 30.0, Hold(due_in_s=30.0, pause_s=30.0)),
        (503, 2.0, Hold(due_in_s=2.0, pause_s=2.0)),
        (429, 0.0, Hold(due_in_s=1.0, pause_s=1.0)),  # at least a second
        (503, 86_400.0, Hold(due_in_s=600.0, pause_s=600.0)),  # at most ten minutes
        (429, None, None),  # no Retry-After: the retry schedule decides
        (500, 30.0, None),  # Retry-After means nothing on a 500
        (None, None, None),  # a connection error
        (200, None, None),
    ],
)
def test_hold_for(status: int | None, retry_after: float | None, expected: Hold | None) -> None:
    assert hold_for(status, retry_after) == expected


@pytest.mark.parametrize(
    ("status", "held_so_far", "expected"),
    [
        (429, MAX_HELD_ATTEMPTS - 1, Hold(due_in_s=30.0, pause_s=30.0)),
        (429, MAX_HELD_ATTEMPTS, None),  # "later" for ever: it counts as a retry now
        (503, MAX_HELD_ATTEMPTS + 7, None),
        (410, MAX_HELD_ATTEMPTS, Hold(due_in_s=0.0, disable=True)),  # a 410 always disables
    ],
)
def test_holds_are_bounded(status: int, held_so_far: int, expected: Hold | None) -> None:
    assert hold_for(status, 30.0, held_so_far) == expected


@pytest.mark.parametrize(
    ("asked", "paused"), [(-5.0, 1.0), (0.0, 1.0), (1.5, 1.5), (600.0, 600.0), (601.0, 600.0)]
)
def test_pause_bounds(asked: float, paused: float) -> None:
    assert pause_seconds(asked) == paused


@pytest.mark.parametrize(
    ("tokens", "refilled_ms", "now_ms", "rate", "expected"),
    [
        (0.0, 0, 100, 10.0, 1.0),
        (0.0, 0, 1000, 100.0, 25.0),  # a quarter of a second fills the bucket
        (5.0, 0, 10_000, 100.0, 25.0),  # never more than that
        (0.5, 0, 20, 100.0, 2.5),
        (0.0, 0, 500, 0.5, 0.25),
        (0.0, 0, 60_000, 0.5, 1.0),  # a slow limit still holds one whole token
        (3.0, 1000, 500, 100.0, 3.0),  # a clock going back adds nothing
    ],
)
def test_token_bucket_refill(
    tokens: float, refilled_ms: int, now_ms: int, rate: float, expected: float
) -> None:
    assert refill(tokens, refilled_ms, now_ms, rate) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("message_type", "parameters", "subject"),
    [
        ("user.created", {"entity": {"id": "u1"}}, "user"),
        ("user.updated", None, "user"),  # purged: still about the user
        ("event.created", {"entity": {"id": "e1"}}, "event:e1"),
        ("event.updated", {"old_entity": {"id": "e1"}, "new_entity": {"id": "e1"}}, "event:e1"),
        ("event.deleted", {"entity": {"id": "e2"}}, "event:e2"),
        ("event.created", None, None),
        ("event.created", {"entity": {"id": 3}}, None),
        ("other.thing", {"entity": {"id": "x"}}, None),
    ],
)
def test_subject_of(
    message_type: str, parameters: dict[str, Any] | None, subject: str | None
) -> None:
    assert subject_of(message_type, parameters) == subject
