"""Ids: prefixed and time-sortable; event and user ids are UUIDv7."""

from __future__ import annotations

import re
import uuid

import pytest

from consent_relay import ids

# A known answer, worked out by hand: time 1 ms, random bits all ones.
KNOWN = "000000000" + "1" + "z" * 16


def test_ulid_known_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.urandom", lambda n: b"\xff" * n)
    assert ids._ulid(1) == KNOWN


def test_new_id_shape_and_order() -> None:
    made = [ids.new_id("wh") for _ in range(50)]
    assert all(re.fullmatch(r"wh_[0-9a-hjkmnp-tv-z]{26}", item) for item in made)
    assert ids._ulid(1_000) < ids._ulid(2_000)


def test_new_uuid_is_version_7() -> None:
    value = uuid.UUID(ids.new_uuid())
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
