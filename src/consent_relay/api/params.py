"""Path and query parameters that are text: the same storable-string rule as the bodies.

A NUL in the URL is answered by the ``BodyLimit`` middleware before routing; a lone surrogate
cannot come through percent-decoding (servers decode with replacement), but another server or
a future decoding change must not turn one into a 500, so every text parameter is checked here
too, with the constraints stated in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

from consent_relay.input_text import unstorable_reason

MAX_ID_LENGTH = 256
MAX_QUERY_TEXT = 512


def storable(value: str | None) -> str | None:
    """``value`` when it can be stored and sent back; ValueError (a 422) otherwise."""
    if value is not None:
        reason = unstorable_reason(value)
        if reason is not None:
            raise ValueError(reason)
    return value


def _storable_id(value: str) -> str:
    storable(value)
    return value


def _path_id(description: str) -> object:
    """An id: anything but an existing one is a 404, so no pattern beyond the length."""
    return Path(min_length=1, max_length=MAX_ID_LENGTH, description=description)


EventId = Annotated[str, _path_id("The consent event's id"), AfterValidator(_storable_id)]
UserId = Annotated[str, _path_id("The user's id"), AfterValidator(_storable_id)]
WebhookId = Annotated[str, _path_id("The webhook's id (wh_...)"), AfterValidator(_storable_id)]
DeliveryId = Annotated[str, _path_id("The delivery's id (dlv_...)"), AfterValidator(_storable_id)]
QueryText = Annotated[
    str | None,
    Query(max_length=MAX_QUERY_TEXT, pattern=r"^[^\x00]*$"),
    AfterValidator(storable),
]
