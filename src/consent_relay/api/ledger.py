"""/v1/ledger: the accountability ledger (who was told what, and when)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from consent_relay.api.deps import Ctx, Cursor, Limit, Org
from consent_relay.api.params import QueryText
from consent_relay.domain.timefmt import format_ts
from consent_relay.schemas import Timestamp
from consent_relay.services import ledger

router = APIRouter(tags=["ledger"])


class LedgerEntry(BaseModel):
    """One delivered message: which receiver (webhook) was told what (type, SHA-256 of the
    exact body sent) about whom (user id), when, and what it answered; chained by hashes."""

    seq: int
    message_id: str
    delivery_id: str
    type: str
    user_id: str
    webhook_id: str
    delivered_at: str
    status_code: int | None
    payload_sha256: str | None
    prev_hash: str
    entry_hash: str


class LedgerPage(BaseModel):
    data: list[LedgerEntry]
    next_cursor: str | None


@router.get("/v1/ledger", response_model=LedgerPage)
async def list_ledger(
    ctx: Ctx,
    org: Org,
    user_id: QueryText = None,
    webhook_id: QueryText = None,
    since: Annotated[Timestamp, Query(description="Delivered at or after (ISO-8601)")] = None,
    until: Annotated[Timestamp, Query(description="Delivered before (ISO-8601)")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> LedgerPage:
    """The organization's ledger entries in sequence order, filtered by user (also a deleted
    one), webhook and delivery time: "was the email tool told of Jane's withdrawal, and
    when?" is ``?user_id=jane&webhook_id=...``."""
    page = await ledger.list_entries(
        ctx,
        org,
        user_id=user_id,
        webhook_id=webhook_id,
        since=format_ts(since) if since is not None else None,
        until=format_ts(until) if until is not None else None,
        cursor=cursor,
        limit=limit,
    )
    return LedgerPage.model_validate(page)
