"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) from the ``cryptography`` package.

The key comes from ``CONSENT_RELAY_SECRET_KEY``, else from ``DATA_DIR/secret.key``, which is
generated on first use with mode 0600. API keys are not encrypted but hashed (SHA-256: they
are 256-bit random tokens, so a slow hash adds nothing).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from consent_relay import errors, key_users
from consent_relay.settings import Settings


class SecretBox:
    """Encrypts and decrypts secrets. The first key encrypts; every key decrypts."""

    key_hold: key_users.KeyHold | None = None  # see secret_box

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise errors.BadRequest("at least one secret key is needed")
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError as exc:
            raise errors.BadRequest(
                "CONSENT_RELAY_SECRET_KEY must be 32 url-safe base64-encoded bytes "
                "(make one with: consent-relay generate-key)"
            ) from exc

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise errors.BadRequest("a stored secret cannot be decrypted with this key") from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt under the first key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise errors.BadRequest("a stored secret cannot be decrypted with this key") from exc

    # Values that were stored in clear before they were treated as secrets (custom header
    # values) are told apart from encrypted ones by a prefix: ``seal`` adds it, ``unseal``
    # opens a sealed value and hands a legacy plaintext back as it is.

    def seal(self, plaintext: str) -> str:
        return SEALED + self.encrypt(plaintext)

    def unseal(self, value: str) -> str:
        return self.decrypt(value.removeprefix(SEALED)) if is_sealed(value) else value

    def reseal(self, value: str) -> str:
        """Sealed under the first key: a sealed value re-encrypted, a legacy one sealed."""
        return (
            SEALED + self.rotate(value.removeprefix(SEALED))
            if is_sealed(value)
            else self.seal(value)
        )


SEALED = "enc:v1:"  # the prefix of a sealed value: version 1 is a Fernet token


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED)


def new_key() -> str:
    return Fernet.generate_key().decode()


def _read_or_create(path: Path, make: str) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(make + "\n")
    return make


def secret_box(settings: Settings) -> SecretBox:
    """The process's box. On SQLite the process first takes its hold on the key
    (``key_users.hold``: ``rotate-secret-key`` refuses while it lives, and a rotation
    running now is waited for), then reads the key: the new one, after a rotation."""
    lock = key_users.lock_path(settings.resolved_database_url)
    held = key_users.hold(lock) if lock is not None else None
    key = settings.secret_key or _read_or_create(settings.data_dir / "secret.key", new_key())
    box = SecretBox([key])
    box.key_hold = held  # kept open (the hold lasts) as long as the box
    return box


def admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token, and whether it was just generated (to print it once)."""
    if settings.admin_token:
        return settings.admin_token, False
    path = settings.data_dir / "admin.token"
    existed = path.exists()
    return _read_or_create(path, "adm_" + secrets.token_urlsafe(32)), not existed


def new_api_key() -> str:
    return "crk_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
