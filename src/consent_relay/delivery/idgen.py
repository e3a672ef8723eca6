"""Attempt ids, one an attempt: ``ids.MonotonicIds`` with the ``atm`` prefix.

``ids.new_id`` reads 10 random bytes from the operating system and formats 13 pairs of base32
characters for every id (about 4 us an attempt, measured); the monotonic generator formats the
time part and draws the randomness once a millisecond (see ``ids.MonotonicIds``).
"""

from __future__ import annotations

from consent_relay.ids import MonotonicIds


class AttemptIds(MonotonicIds):
    """``new()`` -> ``atm_`` + a ULID; one generator per worker."""

    __slots__ = ()

    def __init__(self, prefix: str = "atm") -> None:
        super().__init__(prefix)
