"""Fan-out: the messages of a change become deliveries to every matching webhook.

Runs inside the change's own transaction, so the change and its deliveries commit together.
The webhooks come from the process's cache, checked current in that transaction
(``services/webhook_cache.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from consent_relay import ids
from consent_relay.domain.rules import Message
from consent_relay.domain.timefmt import now_ts
from consent_relay.services import webhook_cache
from consent_relay.storage import queue
from consent_relay.storage.records import MessageRecord, NewDelivery, WebhookRecord
from consent_relay.storage.tx import Tx


def matches(webhook: WebhookRecord, message_type: str, regulation: str) -> bool:
    """Event-type filter (empty = all types) and regulation filter. Disabled webhooks match:
    their deliveries queue up, paused, and go out in order when they are enabled again."""
    if webhook.event_types and message_type not in webhook.event_types:
        return False
    return regulation in webhook.regulations


def fan_out(
    hooks: Sequence[WebhookRecord],
    *,
    organization_id: str,
    user_id: str,
    regulation: str,
    fired: Sequence[Message],
    now: str,
) -> tuple[list[MessageRecord], list[NewDelivery]]:
    """The messages of a change and one delivery per matching webhook (pure)."""
    records: list[MessageRecord] = []
    new: list[NewDelivery] = []
    for message in fired:
        record = MessageRecord(
            organization_id=organization_id,
            id=ids.MESSAGES.new(),
            type=message.type,
            regulation=regulation,
            user_id=user_id,
            parameters=message.parameters,
            created_at=now,
        )
        records.append(record)
        new.extend(
            NewDelivery(message=record, webhook_id=hook.id)
            for hook in hooks
            if matches(hook, message.type, regulation)
        )
    return records, new


async def publish(
    tx: Tx,
    *,
    organization_id: str,
    user_id: str,
    regulation: str,
    fired: Sequence[Message],
    now_ms: int,
) -> int:
    """Store the messages and one delivery per matching webhook. Returns deliveries queued."""
    if not fired:
        return 0
    now = now_ts()
    records, new = fan_out(
        await webhook_cache.webhooks_for(tx, organization_id),
        organization_id=organization_id,
        user_id=user_id,
        regulation=regulation,
        fired=fired,
        now=now,
    )
    await queue.enqueue(tx, records, new, now_ms, now)
    return len(new)
