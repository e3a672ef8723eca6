"""Standard Webhooks signatures on every delivery (docs/delivery-contract.md).

We sign with the ``standardwebhooks`` reference library rather than our own HMAC code, so what we
send is exactly what its verifiers (in every language) accept. During a secret rotation both the
old and the new secret sign, space-separated, so receivers can switch secrets at their own pace.

Signing runs once per attempt on the hot path; decoding a ``whsec_`` secret each time is wasted
work, so the signer object is cached per secret string.
"""

from __future__ import annotations

import base64
import secrets as _secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


@lru_cache(maxsize=4096)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)


@lru_cache(maxsize=8)
def _moment(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per secret, space-separated."""
    if not secrets:
        raise ValueError("at least one signing secret is required")
    moment = _moment(timestamp)
    # Bodies are rendered by orjson, hence valid UTF-8; the library signs text and re-encodes it
    # to the very same bytes.
    text = body.decode("utf-8")
    signatures = [_signer(secret).sign(msg_id, moment, text) for secret in secrets]
    return " ".join(signatures)


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }
