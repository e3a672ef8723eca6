"""Secrets at rest: the generated key file, the admin token, the secret box."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_relay import crypto, errors
from consent_relay.settings import Settings


def test_a_generated_secret_key_is_private_and_stable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", secret_key="")
    box = crypto.secret_box(settings)
    key_file = tmp_path / "data" / "secret.key"
    assert (key_file.stat().st_mode & 0o777) == 0o600
    token = box.encrypt("whsec_canary")
    assert "canary" not in token
    assert crypto.secret_box(settings).decrypt(token) == "whsec_canary"  # same key next start


def test_the_admin_token_is_generated_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, admin_token="")
    first, generated = crypto.admin_token(settings)
    again, generated_again = crypto.admin_token(settings)
    assert (generated, generated_again) == (True, False)
    assert first == again
    assert first.startswith("adm_")
    assert (tmp_path / "admin.token").stat().st_mode & 0o777 == 0o600


def test_a_malformed_key_is_refused_with_a_hint() -> None:
    with pytest.raises(errors.BadRequest, match="generate-key"):
        crypto.SecretBox(["not a key"])


def test_api_keys_are_stored_as_hashes() -> None:
    key = crypto.new_api_key()
    assert key.startswith("crk_")
    assert crypto.hash_key(key) != key
    assert len(crypto.hash_key(key)) == 64
