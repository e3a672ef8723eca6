"""Erasure and retention at the row level: purge message payloads and attempts' texts,
record erasures, checkpoint SQLite's WAL.

A purged message keeps its ids, type, user id and times (pseudonymous) and loses its
``parameters``; ``purge_reason`` says why ("erased" | "expired"). A message is never purged
while a delivery still needs it: one pending, or a dead letter not replayed, except that an
erased user's dead letters lose it once the erasure's grace period is over.

Deliveries are found through ``ix_deliveries_queue`` (webhook_id, user_id, seq): a user's
deliveries are those of the organization's webhooks and that user, never a table scan.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from consent_relay.storage import codec, dialect
from consent_relay.storage.tx import Tx

ERASED = "erased"
EXPIRED = "expired"

# A delivery that still needs its message. ``:keep_dead`` is false once an erasure's grace
# is over: then only pending deliveries hold the payload back.
_NEEDED = """
    EXISTS (
        SELECT 1 FROM deliveries d
        WHERE d.webhook_id IN (
                SELECT w.id FROM webhooks w WHERE w.organization_id = m.organization_id)
          AND d.user_id = m.user_id AND d.message_id = m.id
          AND (d.status = 'pending'
               OR (d.status = 'dead' AND d.replayed_by IS NULL AND {keep_dead}))
    )
"""

_USER_DELIVERIES = """
    SELECT d.id FROM deliveries d
    WHERE d.webhook_id IN (SELECT w.id FROM webhooks w WHERE w.organization_id = :org)
      AND d.user_id = :user
"""


@dataclass(frozen=True)
class Purged:
    """A message whose payload was just purged."""

    organization_id: str
    id: str
    user_id: str


async def record_erasure(tx: Tx, org_id: str, user_id: str, now: str) -> None:
    """The user's data is erased as of ``now`` (again, if erased before and come back)."""
    await tx.conn.execute(
        text(
            """
            INSERT INTO erasures (organization_id, user_id, erased_at, settled_at)
            VALUES (:org, :user, :now, NULL)
            ON CONFLICT (organization_id, user_id) DO UPDATE
            SET erased_at = excluded.erased_at, settled_at = NULL
            """
        ),
        {"org": org_id, "user": user_id, "now": now},
    )


async def purge_user_messages(
    tx: Tx, org_id: str, user_id: str, *, erased_at: str, now: str, keep_dead: bool
) -> list[Purged]:
    """Purge (as erased) the user's messages up to ``erased_at`` that no delivery needs;
    through the partial index on unpurged messages of a user."""
    sql = f"""
        UPDATE messages SET parameters = NULL, purged_at = :now, purge_reason = '{ERASED}'
        WHERE pk IN (
            SELECT m.pk FROM messages m
            WHERE m.organization_id = :org AND m.user_id = :user AND m.purged_at IS NULL
              AND m.created_at <= :erased_at
              AND NOT {_NEEDED.format(keep_dead="true" if keep_dead else "false")}
        )
        RETURNING organization_id, id, user_id
    """
    rows = await tx.conn.execute(
        text(sql), {"org": org_id, "user": user_id, "erased_at": erased_at, "now": now}
    )
    return [Purged(r.organization_id, r.id, r.user_id) for r in rows]


async def unpurged_count(tx: Tx, org_id: str, user_id: str, erased_at: str) -> int:
    row = (
        await tx.conn.execute(
            text(
                """
                SELECT count(*) FROM messages
                WHERE organization_id = :org AND user_id = :user AND purged_at IS NULL
                  AND created_at <= :erased_at
                """
            ),
            {"org": org_id, "user": user_id, "erased_at": erased_at},
        )
    ).scalar_one()
    return int(row)


async def clear_user_attempts(tx: Tx, org_id: str, user_id: str) -> int:
    """Every attempt of the user's deliveries loses its response body and request headers
    (what a receiver echoed back may be personal data; the outcome, status and timing stay)."""
    result = await tx.conn.execute(
        text(
            f"""
            UPDATE attempts SET response_body = NULL, request_headers = NULL
            WHERE delivery_id IN ({_USER_DELIVERIES})
              AND (response_body IS NOT NULL OR request_headers IS NOT NULL)
            """
        ),
        {"org": org_id, "user": user_id},
    )
    return int(result.rowcount or 0)


@dataclass(frozen=True)
class Erasure:
    organization_id: str
    user_id: str
    erased_at: str


async def unsettled_erasures(
    tx: Tx, limit: int, after: tuple[str, str, str] | None = None
) -> list[Erasure]:
    """Erasures with messages still waiting (pending deliveries, dead letters in grace), in
    (erased_at, organization, user) order after ``after``: a purge pass walks them all in
    turn, so that erasures waiting out a grace period never starve the others."""
    key = after or ("", "", "")
    rows = await tx.conn.execute(
        text(
            "SELECT organization_id, user_id, erased_at FROM erasures "
            "WHERE settled_at IS NULL AND (erased_at, organization_id, user_id) > (:a, :o, :u) "
            "ORDER BY erased_at, organization_id, user_id LIMIT :limit"
        ),
        {"limit": limit, "a": key[0], "o": key[1], "u": key[2]},
    )
    return [Erasure(r.organization_id, r.user_id, r.erased_at) for r in rows]


async def settle(tx: Tx, erasure: Erasure, now: str) -> None:
    await tx.conn.execute(
        text(
            "UPDATE erasures SET settled_at = :now WHERE organization_id = :org "
            "AND user_id = :user AND erased_at = :erased_at"
        ),
        {"now": now, "org": erasure.organization_id, "user": erasure.user_id,
         "erased_at": erasure.erased_at},
    )  # fmt: skip


async def erasure_of(tx: Tx, org_id: str, user_id: str) -> str | None:
    """When the user's data was (last) erased, if ever."""
    row = (
        await tx.conn.execute(
            text("SELECT erased_at FROM erasures WHERE organization_id = :org AND user_id = :user"),
            {"org": org_id, "user": user_id},
        )
    ).first()
    return None if row is None else str(row.erased_at)


# -- retention ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """One bounded step of the retention purge over unpurged messages in ``pk`` order."""

    purged: list[Purged]
    next_pk: int  # where the next step starts
    frontier: bool  # reached messages too young to expire: start over next period


async def purge_expired(tx: Tx, *, after_pk: int, created_before: str, now: str, scan: int) -> Scan:
    """Look at the next ``scan`` unpurged messages after ``after_pk`` (partial index
    ``ix_messages_unpurged``) and purge, as expired, those created before ``created_before``
    that no delivery needs. Two short statements whatever the table's size."""
    rows = list(
        await tx.conn.execute(
            text(
                "SELECT pk, created_at FROM messages WHERE purged_at IS NULL AND pk > :after "
                "ORDER BY pk LIMIT :scan"
            ),
            {"after": after_pk, "scan": scan},
        )
    )
    old = [int(r.pk) for r in rows if r.created_at < created_before]
    frontier = len(rows) < scan or len(old) < len(rows)
    next_pk = 0 if frontier else int(rows[-1].pk)
    if not old:
        return Scan([], next_pk, frontier)
    sql = f"""
        UPDATE messages SET parameters = NULL, purged_at = :now, purge_reason = '{EXPIRED}'
        WHERE pk IN (
            SELECT m.pk FROM messages m
            WHERE m.pk IN ({dialect.strings(tx.dialect, "pks")}) AND m.purged_at IS NULL
              AND NOT {_NEEDED.format(keep_dead="true")}
        )
        RETURNING organization_id, id, user_id
    """
    if tx.dialect == "postgresql":
        sql = sql.replace(
            dialect.strings("postgresql", "pks"),
            "SELECT CAST(jsonb_array_elements_text(CAST(:pks AS jsonb)) AS bigint)",
        )
    result = await tx.conn.execute(text(sql), {"pks": codec.dumps(old), "now": now})
    purged = [Purged(r.organization_id, r.id, r.user_id) for r in result]
    return Scan(purged, next_pk, frontier)


async def clear_attempts_of(tx: Tx, purged: Sequence[Purged]) -> int:
    """The attempts of the purged messages' deliveries lose their response bodies and
    request headers (one statement for the batch)."""
    if not purged:
        return 0
    rows: list[dict[str, Any]] = [
        {"org": p.organization_id, "id": p.id, "uid": p.user_id} for p in purged
    ]
    source = dialect.rows_source(tx.dialect, [("org", "text"), ("id", "text"), ("uid", "text")])
    result = await tx.conn.execute(
        text(
            f"""
            UPDATE attempts SET response_body = NULL, request_headers = NULL
            WHERE delivery_id IN (
                SELECT d.id FROM {source}
                JOIN deliveries d ON d.user_id = v.uid AND d.message_id = v.id
                  AND d.webhook_id IN (SELECT w.id FROM webhooks w WHERE w.organization_id = v.org)
            )
              AND (response_body IS NOT NULL OR request_headers IS NOT NULL)
            """
        ),
        {"rows": codec.dumps(rows)},
    )
    return int(result.rowcount or 0)


# -- SQLite: no byte left behind -------------------------------------------------------------


def _checkpoint(path: Path) -> bool:
    conn = sqlite3.connect(path, timeout=10)
    try:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(busy) == 0
    finally:
        conn.close()


async def checkpoint_sqlite(database: str | None) -> bool:
    """Copy the WAL into the database file and truncate it to nothing (secure_delete has
    zeroed the freed space the checkpoint writes back), so that erased bytes live in no
    file. False when a reader kept it from completing: try again later."""
    if not database or database == ":memory:":
        return True
    return await asyncio.to_thread(_checkpoint, Path(database))
