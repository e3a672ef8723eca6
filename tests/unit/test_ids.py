"""Ids: prefixed and time-sortable; event and user ids are UUIDv7."""

from __future__ import annotations

import base64
import re
import uuid

import pytest

from consent_relay import ids

# A known answer, worked out by hand: time 1 ms, random bits all ones.
KNOWN = "000000000" + "1" + "z" * 16


def test_ulid_known_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.urandom", lambda n: b"\xff" * n)
    assert ids._ulid(1) == KNOWN


@pytest.mark.parametrize(
    ("now_ms", "random_bits"),
    [(0, 0), (1, 2**80 - 1), (2**48 - 1, 0), (1_767_225_600_000, 0x0123456789ABCDEF0123)],
)
def test_ulid_matches_base32_of_time_and_randomness(
    monkeypatch: pytest.MonkeyPatch, now_ms: int, random_bits: int
) -> None:
    """Crockford base32 of the 130-bit (2 zero bits, 48-bit time, 80 random bits) value,
    as the standard library's base32 (another alphabet) spells it."""
    monkeypatch.setattr("os.urandom", lambda n: random_bits.to_bytes(n, "big"))
    raw = (now_ms << 80 | random_bits).to_bytes(17, "big")
    crockford = str.maketrans(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789abcdefghjkmnpqrstvwxyz"
    )
    expected = base64.b32encode(b"\x00\x00\x00" + raw).decode().translate(crockford)[-26:]
    assert ids._ulid(now_ms) == expected


def test_new_id_shape_and_order() -> None:
    made = [ids.new_id("wh") for _ in range(50)]
    assert all(re.fullmatch(r"wh_[0-9a-hjkmnp-tv-z]{26}", item) for item in made)
    assert ids._ulid(1_000) < ids._ulid(2_000)


def test_new_uuid_is_version_7() -> None:
    value = uuid.UUID(ids.new_uuid())
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
