"""Per-webhook flow state: a pause a receiver asked for (Retry-After), a webhook we disabled
on its behalf (410 Gone), and the dead letters a delivered message supersedes.

The claim honours pauses in its one statement (``queue.claim_sql``); the record step writes
them here, in the record transaction, one set-based statement per kind and batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, text

from consent_relay.storage import codec, dialect
from consent_relay.storage.tables import webhook_flow
from consent_relay.storage.tx import Tx


async def pause(tx: Tx, pauses: Sequence[tuple[str, int, str]]) -> None:
    """Pause webhooks ``(webhook_id, until_ms, reason)``; a longer pause already set stays."""
    if not pauses:
        return
    longest: dict[str, tuple[int, str]] = {}
    for webhook_id, until_ms, reason in pauses:
        if webhook_id not in longest or until_ms > longest[webhook_id][0]:
            longest[webhook_id] = (until_ms, reason)
    rows = [{"w": w, "until": u, "why": r} for w, (u, r) in sorted(longest.items())]
    source = dialect.rows_source(tx.dialect, [("w", "text"), ("until", "bigint"), ("why", "text")])
    await tx.conn.execute(
        text(
            f"""
            INSERT INTO webhook_flow (webhook_id, tokens, refilled_ms, paused_until_ms,
                                      paused_reason)
            SELECT w, 0, 0, until, why FROM {source}
            WHERE true
            ON CONFLICT (webhook_id) DO UPDATE
            SET paused_until_ms = excluded.paused_until_ms,
                paused_reason = excluded.paused_reason
            WHERE webhook_flow.paused_until_ms IS NULL
               OR webhook_flow.paused_until_ms < excluded.paused_until_ms
            """
        ),
        {"rows": codec.dumps(rows)},
    )


async def disable(tx: Tx, disabled: Sequence[tuple[str, str]], now: str) -> None:
    """Disable webhooks ``(webhook_id, reason)`` (a receiver answered 410 Gone)."""
    if not disabled:
        return
    rows = [{"w": w, "why": r} for w, r in sorted(dict(disabled).items())]
    source = dialect.rows_source(tx.dialect, [("w", "text"), ("why", "text")])
    await tx.conn.execute(
        text(
            f"""
            UPDATE webhooks SET enabled = false, disabled_reason = v.why, updated_at = :now
            FROM {source}
            WHERE webhooks.id = v.w AND webhooks.enabled
            """
        ),
        {"rows": codec.dumps(rows), "now": now},
    )


# The statement by which dead letters (not replayed) that a delivered message replaces become
# ``superseded``, for one delivered message (``executemany``), its parameters by position
# ``(now, webhook, user, seq, subject, message id)``: same webhook, same user, same subject, an
# older message. It looks through ``ix_deliveries_dead_letters`` at the queue's dead letters
# only (a dead letter left its queue before the current head, so its seq is lower). Message
# ids are time-ordered, so "older" is ``message_id <``: a replay, delivered late with an old
# message, supersedes nothing newer than its message. The record runs it on SQLite
# (``queue_sqlite``); PostgreSQL's record has the same as a CTE (``queue_pg.RECORD``).
# (``INDEXED BY``: with statistics, SQLite took the unique queue index instead, migration
# 0013, and read the queue's whole history before the delivered message.)
SUPERSEDE_ROW = """
    UPDATE deliveries INDEXED BY ix_deliveries_dead_letters
    SET status = 'superseded', updated_at = ?
    WHERE webhook_id = ? AND user_id = ? AND seq < ? AND dead_at IS NOT NULL
      AND status = 'dead' AND replayed_by IS NULL AND subject = ? AND message_id < ?
"""


async def paused_until(tx: Tx, webhook_ids: Iterable[str], now_ms: int) -> dict[str, int]:
    """Of these webhooks, those paused after ``now_ms``: webhook id -> until (ms)."""
    wanted = list(webhook_ids)
    if not wanted:
        return {}
    rows = await tx.conn.execute(
        select(webhook_flow.c.webhook_id, webhook_flow.c.paused_until_ms).where(
            webhook_flow.c.webhook_id.in_(wanted), webhook_flow.c.paused_until_ms > now_ms
        )
    )
    return {row.webhook_id: int(row.paused_until_ms) for row in rows}


def subject_of(message_type: str, parameters: dict[str, Any] | None) -> str | None:
    """What a message is about, for superseding: ``user`` for ``user.*`` (the queue is the
    user's already), ``event:<id>`` for ``event.*``; None for anything else."""
    if message_type.startswith("user."):
        return "user"
    if message_type.startswith("event.") and parameters is not None:
        for key in ("entity", "new_entity"):
            entity = parameters.get(key)
            if isinstance(entity, dict) and isinstance(entity.get("id"), str):
                return f"event:{entity['id']}"
    return None


BURST_S = 0.25  # a rate-limited webhook's bucket holds this long's worth of tokens (>= 1)


def refill(tokens: float, refilled_ms: int, now_ms: int, rate: float) -> float:
    """A token bucket of ``rate`` tokens a second: its content at ``now_ms``. It holds
    ``BURST_S`` worth (at least one token): small, so that a rate measured over a few seconds
    stays within a few percent of the limit even after an idle spell."""
    capacity = max(rate * BURST_S, 1.0)
    elapsed = max(0, now_ms - refilled_ms) / 1000
    return min(capacity, tokens + elapsed * rate)


async def ensure_bucket(tx: Tx, webhook_id: str, now_ms: int) -> None:
    """The webhook's flow row, for its rate limit's bucket (full: one burst's worth)."""
    await tx.conn.execute(
        text(
            "INSERT INTO webhook_flow (webhook_id, tokens, refilled_ms) VALUES (:w, 0, 0)"
            " ON CONFLICT (webhook_id) DO NOTHING"
        ),
        {"w": webhook_id},
    )


async def figures(tx: Tx, now_ms: int) -> list[tuple[str, bool, bool, int]]:
    """Per webhook: ``(id, paused now, disabled by us, superseded deliveries)``, for the
    metrics; the count goes through ``ix_deliveries_letters``, a webhook at a time."""
    rows = await tx.conn.execute(
        text(
            """
            SELECT w.id,
                   EXISTS (SELECT 1 FROM webhook_flow f
                           WHERE f.webhook_id = w.id AND f.paused_until_ms > :now) AS paused,
                   w.disabled_reason IS NOT NULL AND NOT w.enabled AS disabled,
                   (SELECT count(*) FROM deliveries d
                    WHERE d.webhook_id = w.id AND d.dead_at IS NOT NULL
                      AND d.status = 'superseded') AS superseded
            FROM webhooks w
            """
        ),
        {"now": now_ms},
    )
    return [(r.id, bool(r.paused), bool(r.disabled), int(r.superseded)) for r in rows]


async def count_superseded(tx: Tx, webhook_id: str) -> int:
    """A webhook's superseded dead letters (the dashboard)."""
    row = await tx.conn.execute(
        text(
            "SELECT count(*) FROM deliveries"
            " WHERE webhook_id = :w AND dead_at IS NOT NULL AND status = 'superseded'"
        ),
        {"w": webhook_id},
    )
    return int(row.scalar_one())
