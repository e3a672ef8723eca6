"""Re-encrypting every stored secret under a new key (``consent-relay rotate-secret-key``)."""

from __future__ import annotations

import os
from pathlib import Path

from consent_relay.crypto import SecretBox
from consent_relay.storage.store import Store


async def reencrypt(store: Store, old_key: str, new_key: str) -> int:
    """Every webhook secret decrypted with ``old_key`` and encrypted with ``new_key``, in one
    transaction. Returns how many secrets were rewritten."""
    box = SecretBox([new_key, old_key])
    count = 0
    async with store.write() as tx:
        for hook in await tx.list_all_webhooks():
            hook.signing_secret = box.rotate(hook.signing_secret)
            count += 1
            if hook.previous_signing_secret:
                hook.previous_signing_secret = box.rotate(hook.previous_signing_secret)
                count += 1
            if hook.auth_secret:
                hook.auth_secret = box.rotate(hook.auth_secret)
                count += 1
            await tx.update_webhook(hook)
    return count


def stage_key_file(path: Path, key: str) -> Path:
    """Write the new key beside the old one (mode 0600) *before* the database changes, so a
    crash in between never leaves secrets under a key that is nowhere on disk."""
    staged = path.with_suffix(".new")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return staged
