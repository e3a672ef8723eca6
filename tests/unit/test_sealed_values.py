"""Sealed values (custom header values at rest) and the redaction of stored attempts."""

from __future__ import annotations

import pytest

from consent_relay import crypto, errors
from consent_relay.delivery import requests

OLD, NEW = crypto.new_key(), crypto.new_key()


def test_seal_and_unseal() -> None:
    box = crypto.SecretBox([OLD])
    sealed = box.seal("k-123")
    assert sealed.startswith("enc:v1:")
    assert "k-123" not in sealed
    assert crypto.is_sealed(sealed)
    assert box.unseal(sealed) == "k-123"
    assert box.seal("k-123") != sealed  # a fresh IV each time


@pytest.mark.parametrize("legacy", ["prod", "", "gAAAAABlegacy-looking", "enc:v2:x"])
def test_a_legacy_plaintext_is_read_as_it_is(legacy: str) -> None:
    assert crypto.SecretBox([OLD]).unseal(legacy) == legacy


def test_reseal_moves_to_the_first_key_and_seals_legacy_values() -> None:
    old_box, both = crypto.SecretBox([OLD]), crypto.SecretBox([NEW, OLD])
    new_box = crypto.SecretBox([NEW])
    for value in (old_box.seal("k-123"), "k-123"):
        resealed = both.reseal(value)
        assert crypto.is_sealed(resealed)
        assert new_box.unseal(resealed) == "k-123"
        with pytest.raises(errors.BadRequest):
            old_box.unseal(resealed)


def test_a_value_sealed_under_another_key_is_refused() -> None:
    with pytest.raises(errors.BadRequest):
        crypto.SecretBox([NEW]).unseal(crypto.SecretBox([OLD]).seal("k"))
    with pytest.raises(errors.BadRequest):
        crypto.SecretBox([NEW]).reseal(crypto.SecretBox([OLD]).seal("k"))


@pytest.mark.parametrize(
    ("name", "value", "stored"),
    [
        ("Content-Type", "application/json", "application/json"),
        ("User-Agent", "consent-relay/1", "consent-relay/1"),
        ("webhook-id", "msg_1", "msg_1"),
        ("webhook-timestamp", "1700000000", "1700000000"),
        ("webhook-signature", "v1,abc=", "v1,abc="),
        ("Authorization", "Bearer t", "[redacted]"),
        ("authorization", "Bearer t", "[redacted]"),
        ("X-Api-Key", "k-123", "[redacted]"),
        ("X-Env", "prod", "[redacted]"),
        ("x-anything", "", "[redacted]"),
    ],
)
def test_attempt_headers_keep_names_and_only_our_values(name: str, value: str, stored: str) -> None:
    assert requests.redacted({name: value}) == {name: stored}
