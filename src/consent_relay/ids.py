"""Identifiers.

Internal resources get type-prefixed, time-sortable ids (``wh_``, ``msg_``, ``dlv_``...):
a 48-bit millisecond timestamp and 80 random bits in Crockford base32, like a ULID.
Consent events and users get UUIDs, as Didomi's API does (version 7: time-ordered).
"""

from __future__ import annotations

import os
import time
import uuid

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars)).lower()


def new_id(prefix: str) -> str:
    """A prefixed, time-sortable id, e.g. ``new_id("wh")`` -> ``wh_01j...``."""
    return f"{prefix}_{_ulid()}"


def new_uuid() -> str:
    """A UUIDv7 string (RFC 9562): time-ordered, so indexes stay compact."""
    ms = int(time.time() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 68) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return str(uuid.UUID(int=value))
