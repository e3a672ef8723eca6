"""The results waiting for the recorder (delivery.waiting.Waiting): taken in the order they
came, in batches of at most ``most``; ``wait`` returns while any wait or once closed, and
blocks otherwise; after ``close`` the rest is handed over and then nothing."""

from __future__ import annotations

import asyncio

import pytest

from consent_relay.delivery.waiting import Waiting


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
