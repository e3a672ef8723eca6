"""What every write of events and users shares: one transaction (again when a concurrent
writer created the same user first) and the webhooks the change fires, in that transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from consent_relay import errors
from consent_relay.domain import rules
from consent_relay.domain.rules import Change
from consent_relay.runtime import Context
from consent_relay.services import outbox
from consent_relay.storage.tx import Tx

T = TypeVar("T")
MAX_TRIES = 5


class Retry(Exception):
    """A concurrent writer created the same user first: run the transaction again."""


async def publish(
    ctx: Context, tx: Tx, org_id: str, user_id: str, regulation: str, change: Change, quiet: bool
) -> int:
    """Store the messages the change fires and their deliveries; returns deliveries queued."""
    if quiet:
        return 0
    return await outbox.publish(
        tx,
        organization_id=org_id,
        user_id=user_id,
        regulation=regulation,
        fired=rules.messages_for(change),
        now_ms=ctx.clock_ms(),
    )


async def write(ctx: Context, work: Callable[[Tx], Awaitable[tuple[T, int]]]) -> T:
    """Run ``work(tx)`` (returning its result and the deliveries it queued) in a write
    transaction, again if a concurrent user creation won; wake the workers if it queued."""
    for _ in range(MAX_TRIES):
        try:
            async with ctx.store.write() as tx:
                result, queued = await work(tx)
        except Retry:
            continue
        if queued:
            ctx.notify_enqueued()
        return result
    raise errors.Conflict("the user is being changed concurrently; retry")
