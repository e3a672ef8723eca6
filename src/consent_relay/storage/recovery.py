"""Recovery: dead letters going out again once their receiver is back, without ever sending a
stale consent state.

- ``without_stale`` leaves out of a bulk replay the dead letters that a later message of the
  same subject (``flow.subject_of``), still queued, would supersede: replayed, they would go
  out after it and put an older state over it. Once it is delivered they are superseded;
  should it die instead, the next bulk replay sends them all, in order.
- ``needing_replay`` and ``replay_webhook``: a webhook that delivered something, has
  ``auto_replay`` on and dead letters not replayed yet gets them replayed through the same
  path as a person's replay (``batches.replay``). A dead letter that is itself a replay is
  left to a person: a message its receiver refuses for good would otherwise go round for
  ever.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import text

from consent_relay.storage import batches, codec, dialect
from consent_relay.storage import deliveries as delivery_reads
from consent_relay.storage.records import DeliveryRecord
from consent_relay.storage.tx import Tx

AUTO_REPLAY_LIMIT = 10_000  # dead letters one automatic pass replays, at most


async def without_stale(tx: Tx, dead: Sequence[DeliveryRecord]) -> list[DeliveryRecord]:
    """``dead`` but those a later queued message of the same subject would supersede."""
    if not dead:
        return []
    source = dialect.strings(tx.dialect, "ids")
    rows = await tx.conn.execute(
        text(
            f"""
            SELECT d.id FROM deliveries d
            WHERE d.id IN ({source}) AND d.subject IS NOT NULL
              AND EXISTS (
                  SELECT 1 FROM deliveries n
                  WHERE n.webhook_id = d.webhook_id AND n.user_id = d.user_id
                    AND n.seq > d.seq AND n.status = 'pending' AND n.subject = d.subject
                    AND n.message_id > d.message_id)
            """
        ),
        {"ids": codec.dumps([row.id for row in dead])},
    )
    stale = {row.id for row in rows}
    return [row for row in dead if row.id not in stale]


async def needing_replay(tx: Tx, webhook_ids: Iterable[str]) -> list[tuple[str, str]]:
    """Of these webhooks, the enabled ones with ``auto_replay`` on and a dead letter not
    replayed yet: ``(webhook id, organization id)``. One statement, through
    ``ix_deliveries_letters``."""
    wanted = sorted(set(webhook_ids))
    if not wanted:
        return []
    rows = await tx.conn.execute(
        text(
            f"""
            SELECT w.id, w.organization_id FROM webhooks w
            WHERE w.id IN ({dialect.strings(tx.dialect, "ids")})
              AND w.enabled AND w.auto_replay
              AND EXISTS (
                  SELECT 1 FROM deliveries d
                  WHERE d.webhook_id = w.id AND d.dead_at IS NOT NULL AND d.status = 'dead'
                    AND d.replayed_by IS NULL AND d.replay_of IS NULL)
            """
        ),
        {"ids": codec.dumps(wanted)},
    )
    return [(row.id, row.organization_id) for row in rows]


async def replay_webhook(
    tx: Tx, org_id: str, webhook_id: str, now_ms: int, now: str
) -> batches.Replayed:
    """Replay a webhook's dead letters automatically: not replayed yet, not replays
    themselves, not superseded, not stale, payload kept; oldest first (per-user order)."""
    # Two workers recovering the same webhook at once would both replay its dead letters:
    # the webhook's row lock makes the second wait, then find them replayed.
    await tx.conn.execute(
        text("SELECT id FROM webhooks WHERE id = :id" + dialect.for_update(tx.dialect)),
        {"id": webhook_id},
    )
    dead = await delivery_reads.dead_for_replay(
        tx, org_id, webhook_id, delivery_ids=None, since=None, until=None,
        limit=AUTO_REPLAY_LIMIT,
    )  # fmt: skip
    dead = [row for row in dead if row.replay_of is None]
    dead = await without_stale(tx, dead)
    purged = await delivery_reads.purge_reasons(tx, list({row.message_id for row in dead}))
    letters = [
        batches.DeadLetter(
            row.pk, row.id, row.organization_id, webhook_id, row.message_id, row.user_id
        )
        for row in dead
        if row.message_id not in purged
    ]
    return await batches.replay(tx, letters, now_ms, now)
