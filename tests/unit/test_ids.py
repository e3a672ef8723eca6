"""Ids: prefixed and time-sortable; event and user ids are UUIDv7."""

from __future__ import annotations

import base64
import os
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


_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def _ms_of(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + _ALPHABET.index(char)
    return value >> 80


def test_monotonic_ids_read_like_new_id() -> None:
    made = ids.MonotonicIds("dlv").new()
    assert re.fullmatch(r"dlv_[0-9a-hjkmnp-tv-z]{26}", made)
    assert abs(_ms_of(made[4:]) - _ms_of(ids.new_id("dlv")[4:])) < 1000


def test_monotonic_ids_are_unique_and_ordered_across_milliseconds() -> None:
    generator = ids.MonotonicIds("msg")
    made = [generator.new() for _ in range(50_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert _ms_of(made[-1][4:]) > _ms_of(made[0][4:])


def test_the_write_paths_generators() -> None:
    assert ids.MESSAGES.new().startswith("msg_")
    assert ids.DELIVERIES.new().startswith("dlv_")


def test_a_forked_child_does_not_count_on_from_its_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same millisecond in both (the clock stands still): without a new random start the
    child would make the very id its parent makes next."""
    monkeypatch.setattr("time.time", lambda: 1_767_225_600.0)
    generator = ids.MonotonicIds("dlv")
    generator.new()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, generator.new().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    parent = generator.new()
    assert child[:14] == parent[:14]  # the same millisecond
    assert child != parent


@pytest.mark.parametrize(
    "start",
    [0, 1, (1 << 20) - 2, (1 << 40) - 3, (1 << 79) - 2, 0x0123456789ABCDEF0123 >> 1],
)
def test_monotonic_ids_are_exactly_the_ulids_they_count_through(
    start: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generator keeps the id's first pairs between calls and formats only the last
    two: across every carry (a 2**20 boundary among them) each id is still exactly the
    millisecond and the random value counted to, in ``new_id``'s format."""
    now = 1_767_225_600_123
    monkeypatch.setattr("time.time", lambda: now / 1000)
    monkeypatch.setattr("os.urandom", lambda _n: (start << 1).to_bytes(10, "big"))
    generator = ids.MonotonicIds("atm")
    for n in range(5):
        value = (now << 80) | (start + n)
        expected = "".join(_PAIRS[(value >> shift) & 0x3FF] for shift in range(120, -1, -10))
        assert generator.new() == f"atm_{expected}"
