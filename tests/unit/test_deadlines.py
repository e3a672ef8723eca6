"""The shared deadline timer (delivery.deadlines): each request is cut at its own deadline,
not before and not much after, by one timer; a cancellation that is not the deadline's
stays a cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from consent_relay.delivery import deadlines

LATE = 0.2  # the event loop's own lateness on a busy machine, on top of the deadline


async def _guarded(seconds: float, work: float) -> tuple[str, float]:
    """Sleep ``work`` seconds under a ``seconds`` deadline: ("done" | "timeout", elapsed)."""
    started = time.monotonic()
    guard = deadlines.start(seconds)
    try:
        await asyncio.sleep(work)
    except asyncio.CancelledError:
        if not guard.expired_here():
            raise
        return "timeout", time.monotonic() - started
    finally:
        guard.finish()
    return "done", time.monotonic() - started


async def test_a_request_past_its_deadline_is_cut_at_it() -> None:
    result, elapsed = await _guarded(0.3, 10)
    assert result == "timeout"
    assert 0.3 <= elapsed < 0.3 + LATE
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_request_within_its_deadline_is_left_alone() -> None:
    assert (await _guarded(0.3, 0.05))[0] == "done"
    await asyncio.sleep(0.4)  # its deadline comes round: nothing happens to this task


async def test_each_request_has_its_own_deadline_whatever_the_order() -> None:
    """A shorter deadline registered after longer ones still fires first; finished ones
    are not cancelled when theirs come round."""
    long, short, quick = await asyncio.gather(
        _guarded(0.6, 10), _guarded(0.2, 10), _guarded(0.3, 0.01)
    )
    assert long[0] == short[0] == "timeout"
    assert quick[0] == "done"
    assert 0.2 <= short[1] < 0.2 + LATE
    assert 0.6 <= long[1] < 0.6 + LATE


async def test_many_requests_share_the_timer_and_every_one_is_cut() -> None:
    results = await asyncio.gather(*(_guarded(0.1 + n / 1000, 10) for n in range(200)))
    assert {r for r, _ in results} == {"timeout"}
    assert all(0.1 <= elapsed < 0.3 + LATE for _, elapsed in results)


async def test_a_cancellation_that_is_not_the_deadline_stays_one() -> None:
    task = asyncio.create_task(_guarded(5, 10))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_beside_the_deadline_is_not_swallowed() -> None:
    """Shutdown cancelling a sender in the same moment as its deadline passes: the task is
    still cancelled (the deadline takes back only its own cancellation)."""
    guards: list[deadlines.Guard] = []

    async def sender() -> str:
        guard = deadlines.start(10)
        guards.append(guard)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if not guard.expired_here():
                raise
            return "timeout"
        finally:
            guard.finish()
        return "done"

    task = asyncio.create_task(sender())
    await asyncio.sleep(0.01)
    guards[0].expired = True  # what the timer does at the deadline...
    task.cancel()
    task.cancel()  # ...and shutdown, before the task runs again
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize(
    "seconds",
    [
        (0.1, 0.2, 0.3),  # in order: the FIFO alone
        (0.3, 0.2, 0.1),  # each earlier than the last: the heap
        (0.2, 0.1, 0.3, 0.15),  # both
        (0.2, 0.2, 0.1, 0.1),  # ties on either side
    ],
)
async def test_every_deadline_fires_at_its_own_time_whatever_the_order(
    seconds: tuple[float, ...],
) -> None:
    """Deadlines registered in order wait in a FIFO, earlier ones in a heap: each is cut at
    its own deadline either way, and none is left waiting once all have come round."""
    results = await asyncio.gather(*(_guarded(s, 10) for s in seconds))
    for deadline, (result, elapsed) in zip(seconds, results, strict=True):
        assert result == "timeout"
        assert deadline <= elapsed < deadline + LATE
    await asyncio.sleep(deadlines.GRANULARITY * 2)
    assert len(deadlines._BY_LOOP[asyncio.get_running_loop()]) == 0


def test_each_event_loop_has_its_own_deadlines() -> None:
    """The last loop's deadlines are kept at hand; a new loop gets its own, which cut its
    own tasks."""
    first = asyncio.run(_guarded(0.05, 10))
    second = asyncio.run(_guarded(0.05, 10))
    assert first[0] == second[0] == "timeout"
    assert all(0.05 <= elapsed < 0.05 + LATE for _, elapsed in (first, second))
