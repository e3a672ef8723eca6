"""Identifiers.

Internal resources get type-prefixed, time-sortable ids (``wh_``, ``msg_``, ``dlv_``...):
a 48-bit millisecond timestamp and 80 random bits in Crockford base32, like a ULID.
Consent events and users get UUIDs, as Didomi's API does (version 7: time-ordered).
"""

from __future__ import annotations

import os
import time
import uuid
import weakref

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32, lower case
# Two characters (10 bits) at a time: base64.b32encode is pure Python and cost 18 us an id,
# five ids an event (measured in the ingest profile).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _ulid(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    # 48-bit time + 80 random bits = 128 bits; 130 bits with two zero bits in front make
    # 26 base32 characters, the first of which is therefore always 0-7.
    value = (ms & ((1 << 48) - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 0x3FF] for shift in range(120, -1, -10)])


def new_id(prefix: str) -> str:
    """A prefixed, time-sortable id, e.g. ``new_id("wh")`` -> ``wh_01j...``."""
    return f"{prefix}_{_ulid()}"


_generators: weakref.WeakSet[MonotonicIds] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for generator in list(_generators):
        generator._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)

_RANDOM_BITS = 80
_RANDOM_MASK = (1 << _RANDOM_BITS) - 1


class MonotonicIds:
    """``new()`` -> ``<prefix>_`` + a ULID, in the format of ``new_id`` at a fraction of its
    cost, for ids made by the thousand (messages and deliveries on the write path, attempts).

    ``new_id`` reads 10 random bytes from the operating system and formats 13 pairs of base32
    characters for every id (about 4 us). Here the time part (48 bits, the first 5 pairs) is
    formatted once a millisecond and the random part (80 bits) drawn once a millisecond, then
    counted up within it, as a monotonic ULID generator does: ids stay unique (a random start
    a millisecond, then distinct increments), sort by time, and read like every other id. The
    ids are not secrets (none of these is a credential), so their being sequential within a
    millisecond gives nothing away. One generator per kind of id and process: a forked child
    draws a new random start (``os.register_at_fork``), so it never counts on from its
    parent's.
    """

    __slots__ = ("__weakref__", "_head", "_high", "_ms", "_next", "_prefix", "_stem")

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._ms = -1
        self._head = ""
        self._next = 0
        # The id up to its last two pairs (the random part's 60 high bits formatted), for
        # ``_high``: counting up changes them once in 2**20 ids at most.
        self._high = -1
        self._stem = ""
        _generators.add(self)

    def _forget(self) -> None:
        self._ms = -1

    def new(self) -> str:
        ms = int(time.time() * 1000)
        if ms != self._ms:
            self._ms = ms
            time_part = (ms & ((1 << 48) - 1)) << 80
            self._head = (
                self._prefix
                + "_"
                + "".join([_PAIRS[(time_part >> shift) & 0x3FF] for shift in range(120, 79, -10)])
            )
            # Half the random range at most: counting up never carries into the time part.
            self._next = int.from_bytes(os.urandom(10), "big") >> 1
            self._high = -1
        value = self._next & _RANDOM_MASK
        self._next += 1
        pairs = _PAIRS
        if value >> 20 != self._high:
            self._high = value >> 20
            self._stem = self._head + (
                pairs[value >> 70]
                + pairs[(value >> 60) & 0x3FF]
                + pairs[(value >> 50) & 0x3FF]
                + pairs[(value >> 40) & 0x3FF]
                + pairs[(value >> 30) & 0x3FF]
                + pairs[(value >> 20) & 0x3FF]
            )
        return self._stem + pairs[(value >> 10) & 0x3FF] + pairs[value & 0x3FF]


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


# The ids made by the thousand on the write path: one generator each, for the process.
MESSAGES = MonotonicIds("msg")
DELIVERIES = MonotonicIds("dlv")
