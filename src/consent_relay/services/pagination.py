"""Opaque cursors over the internal row order."""

from __future__ import annotations

import base64
import binascii
from typing import Generic, TypeVar

from typing_extensions import TypedDict  # pydantic reads it as a response model on 3.11

from consent_relay import errors

T = TypeVar("T")


class Page(TypedDict, Generic[T]):
    """A page of a listing; ``next_cursor`` is null on the last page."""

    data: list[T]
    next_cursor: str | None


DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def encode(pk: int) -> str:
    return base64.urlsafe_b64encode(f"pk:{pk}".encode()).decode().rstrip("=")


def decode(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = raw.partition(":")
        if prefix != "pk":
            raise ValueError(raw)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise errors.Unprocessable(
            "invalid cursor", [errors.FieldError("cursor", "not a cursor this API returned")]
        ) from exc


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise errors.Unprocessable(
            "invalid limit", [errors.FieldError("limit", f"must be between 1 and {MAX_LIMIT}")]
        )
    return limit


def page(items: list[T], pks: list[int], limit: int) -> Page[T]:
    """``{"data": [...], "next_cursor": ...}``; ``items`` holds up to ``limit + 1`` rows."""
    more = len(items) > limit
    return {
        "data": items[:limit],
        "next_cursor": encode(pks[limit - 1]) if more else None,
    }
