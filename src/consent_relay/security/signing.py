"""Standard Webhooks signatures on every delivery (docs/delivery-contract.md).

``v1,`` + base64 of HMAC-SHA256(key, ``{msg_id}.{timestamp}.{body}``), the key being the
secret's base64 after ``whsec_``: computed here with ``hmac`` and ``hashlib`` (the
``standardwebhooks`` reference library decoded the body to text and re-encoded it, and built
a datetime, on every attempt: about 10 CPU-us of the worker's a delivery). Every signature
the tests see is verified with that library, on varied secrets, ids, timestamps and bodies
(tests/unit/test_signing*.py), so what we send is exactly what its verifiers (in every
language) accept. During a secret rotation both the old and the new secret sign,
space-separated, so receivers can switch secrets at their own pace.

The decoded key is cached per secret string.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Sequence
from functools import lru_cache

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(SECRET_BYTES)).decode("ascii")


@lru_cache(maxsize=4096)
def _key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret, decoded as the reference library does (padding
    added: unpadded base64 is accepted too)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")
    if not key:
        raise ValueError("a signing secret may not be empty")
    return key


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per secret, space-separated."""
    if not secrets:
        raise ValueError("at least one signing secret is required")
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(_key(secret), signed, hashlib.sha256)).decode()
        for secret in secrets
    )


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }
