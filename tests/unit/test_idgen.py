"""Attempt ids (delivery.idgen): the format of ids.new_id, unique and time-ordered."""

from __future__ import annotations

import time

from consent_relay import ids
from consent_relay.delivery import idgen
from tests.unit.test_ids import _ALPHABET, _ms_of


def test_an_attempt_id_reads_like_every_other_id() -> None:
    made = idgen.AttemptIds().new()
    reference = ids.new_id("atm")
    assert made.startswith("atm_")
    assert len(made) == len(reference)
    assert set(made[4:]) <= set(_ALPHABET)
    before = int(time.time() * 1000)
    ms = _ms_of(idgen.AttemptIds().new()[4:])
    assert before - 1 <= ms <= int(time.time() * 1000)
    assert abs(_ms_of(reference[4:]) - ms) < 1000  # the same time part as ids.new_id's


def test_attempt_ids_are_unique_and_ordered_within_and_across_milliseconds() -> None:
    generator = idgen.AttemptIds()
    made = [generator.new() for _ in range(50_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert _ms_of(made[-1][4:]) > _ms_of(made[0][4:])  # it did cross milliseconds


def test_two_generators_do_not_collide() -> None:
    first, second = idgen.AttemptIds(), idgen.AttemptIds()
    a = {first.new() for _ in range(5_000)}
    b = {second.new() for _ in range(5_000)}
    assert not a & b
