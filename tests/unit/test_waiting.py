"""The results waiting for the recorder (delivery.waiting.Waiting): taken in the order they
came, in batches of at most ``most``; ``wait`` returns while any wait or once closed, and
blocks otherwise; after ``close`` the rest is handed over and then nothing.

The jobs for the senders (delivery.waiting.Jobs): first in, first out, whether a consumer
waits or not; ``get`` blocks while none is there; a consumer cancelled while it waits takes
nothing, and one cancelled after it was handed a job gives it back: no job is lost."""

from __future__ import annotations

import asyncio

import pytest

from consent_relay.delivery.waiting import Jobs, Waiting


@pytest.mark.parametrize(
    ("added", "most", "batches"),
    [
        ([], 3, [[]]),
        ([1], 3, [[1], []]),
        ([1, 2, 3], 3, [[1, 2, 3], []]),
        ([1, 2, 3, 4, 5, 6, 7], 3, [[1, 2, 3], [4, 5, 6], [7], []]),
        ([1, 2], 1, [[1], [2], []]),
    ],
)
def test_items_are_taken_in_order_at_most_so_many_at_a_time(
    added: list[int], most: int, batches: list[list[int]]
) -> None:
    waiting: Waiting[int] = Waiting()
    for item in added:
        waiting.add(item)
    assert len(waiting) == len(added)
    assert [waiting.take(most) for _ in batches] == batches
    assert len(waiting) == 0


async def _returns(awaitable: object) -> bool:
    try:
        await asyncio.wait_for(awaitable, 0.05)  # type: ignore[arg-type]
    except TimeoutError:
        return False
    return True


async def test_wait_blocks_until_an_item_is_added_and_again_once_all_are_taken() -> None:
    waiting: Waiting[str] = Waiting()
    assert not await _returns(waiting.wait())
    waiting.add("a")
    waiting.add("b")
    assert await _returns(waiting.wait())
    assert waiting.take(1) == ["a"]
    assert await _returns(waiting.wait())  # "b" still waits
    assert waiting.take(5) == ["b"]
    assert not await _returns(waiting.wait())


async def test_a_waiter_wakes_when_an_item_comes() -> None:
    waiting: Waiting[int] = Waiting()
    waiter = asyncio.create_task(waiting.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    waiting.add(1)
    await asyncio.wait_for(waiter, 1)
    assert waiting.take(10) == [1]


async def test_once_closed_the_rest_is_handed_over_then_nothing_and_wait_returns() -> None:
    waiting: Waiting[int] = Waiting()
    waiting.add(1)
    waiting.add(2)
    waiting.close()
    assert waiting.closed
    assert await _returns(waiting.wait())
    assert waiting.take(1) == [1]
    assert waiting.take(1) == [2]
    assert waiting.take(1) == []
    assert await _returns(waiting.wait())  # closed: never blocks again
    with pytest.raises(RuntimeError, match="closed"):
        waiting.add(3)


@pytest.mark.parametrize(
    ("steps", "got"),
    [
        # "put N": a job; "get": a consumer takes one (started now, awaited at the end)
        (["put 1", "put 2", "get", "get"], [1, 2]),
        (["get", "put 1", "put 2", "get"], [1, 2]),
        (["get", "get", "put 1", "put 2", "put 3", "get"], [1, 2, 3]),
        (["put 1", "get", "get", "put 2", "put 3", "get"], [1, 2, 3]),
    ],
)
async def test_jobs_go_first_in_first_out_to_consumers_waiting_or_not(
    steps: list[str], got: list[int]
) -> None:
    jobs: Jobs[int] = Jobs()
    consumers = []
    for step in steps:
        if step == "get":
            consumers.append(asyncio.create_task(jobs.get()))
            await asyncio.sleep(0)  # it looks now: takes a job, or waits for one
        else:
            jobs.put(int(step.split()[1]))
    assert await asyncio.wait_for(asyncio.gather(*consumers), 1) == got
    assert len(jobs) == 0


async def test_get_waits_until_a_job_is_put() -> None:
    jobs: Jobs[str] = Jobs()
    assert not await _returns(jobs.get())  # cancelled by the timeout: it takes nothing
    consumer = asyncio.create_task(jobs.get())
    await asyncio.sleep(0)
    assert not consumer.done()
    jobs.put("a")
    assert await asyncio.wait_for(consumer, 1) == "a"
    assert len(jobs) == 0


async def test_a_consumer_cancelled_while_waiting_is_passed_over() -> None:
    jobs: Jobs[int] = Jobs()
    gone = asyncio.create_task(jobs.get())
    stays = asyncio.create_task(jobs.get())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    jobs.put(1)
    assert await asyncio.wait_for(stays, 1) == 1
    assert gone.cancelled()


async def test_a_consumer_cancelled_after_it_was_handed_a_job_gives_it_back() -> None:
    jobs: Jobs[int] = Jobs()
    first = asyncio.create_task(jobs.get())
    second = asyncio.create_task(jobs.get())
    await asyncio.sleep(0)  # both wait
    jobs.put(1)  # handed to the first, which has not run yet
    first.cancel()  # and is cancelled before it takes it
    await asyncio.gather(first, return_exceptions=True)
    assert first.cancelled()
    assert await asyncio.wait_for(second, 1) == 1  # the job went on to the next consumer
    jobs.put(2)
    assert await asyncio.wait_for(jobs.get(), 1) == 2
    assert len(jobs) == 0


async def test_a_job_given_back_with_no_consumer_waiting_waits_for_the_next() -> None:
    jobs: Jobs[int] = Jobs()
    first = asyncio.create_task(jobs.get())
    await asyncio.sleep(0)
    jobs.put(1)
    jobs.put(2)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert len(jobs) == 2
    assert [await jobs.get(), await jobs.get()] == [1, 2]  # its place kept: first
