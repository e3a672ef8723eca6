"""The bytes a receiver gets as the body of a delivery (docs/webhook-rules.md, "Payloads").

The body is rendered at each attempt with the webhook's settings of that moment (flatten,
regulations), then signed: the signature covers exactly the bytes sent. orjson gives compact,
deterministic UTF-8 output and is fast on the hot path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from consent_relay.domain.flatten import flatten_body

# Changes made through the user API are GDPR changes; a webhook that only ever hears about GDPR
# needs no "regulation" field, which keeps the body identical to what such receivers expect.
DEFAULT_REGULATION = "gdpr"


def render_body(
    message_type: str,
    parameters: dict[str, Any],
    regulation: str,
    *,
    flatten: bool,
    include_regulation: bool,
) -> bytes:
    """Build ``{"type", "parameters"[, "regulation"]}``, flatten it if asked, encode as JSON."""
    body: dict[str, Any] = {"type": message_type, "parameters": parameters}
    if include_regulation:
        body["regulation"] = regulation
    if flatten:
        body = flatten_body(body)
    return orjson.dumps(body)


def include_regulation_for(webhook_regulations: Iterable[str]) -> bool:
    """True when a webhook's ``regulations`` name anything besides ``gdpr``.

    Such a webhook can receive changes under several regulations, so each body must say which.
    """
    return any(regulation != DEFAULT_REGULATION for regulation in webhook_regulations)
