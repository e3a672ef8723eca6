"""The secret key: ``generate-key`` and ``rotate-secret-key`` (re-encrypt every stored secret)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Annotated

import typer

from consent_relay import crypto, errors
from consent_relay.cli.common import (
    console,
    err,
    refused,
)
from consent_relay.settings import Settings


def generate_key() -> None:
    """Print a new key for CONSENT_RELAY_SECRET_KEY."""
    console.print(crypto.new_key())


def rotate_secret_key(
    new_key: Annotated[
        str | None, typer.Option(help="The new key (default: a generated one).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Rotate even while other processes use the database (then restart them "
            "with the new key).",
        ),
    ] = False,
) -> None:
    """Re-encrypt every stored secret under a new key. With the key in DATA_DIR/secret.key
    the file is replaced; with CONSENT_RELAY_SECRET_KEY set, put the printed key there.
    Stop every serve and worker first: it refuses while one uses the database."""
    from consent_relay import key_users
    from consent_relay.services import secret_keys
    from consent_relay.storage.store import Store

    settings = Settings()
    key_file = settings.data_dir / "secret.key"
    old_key = settings.secret_key or (key_file.read_text().strip() if key_file.exists() else "")
    if not old_key:
        err.print("[red]error:[/red] no secret key yet: nothing is encrypted, nothing to rotate")
        raise typer.Exit(1)
    key = new_key or crypto.new_key()
    crypto.SecretBox([key])  # refuse a malformed key before touching anything

    async def main() -> int:
        store = Store(settings.resolved_database_url, pool_size=1)
        try:
            await store.migrate()
            await store.engine.dispose()  # our own idle connection is not another session
            return await secret_keys.reencrypt(store, old_key, key, force=force)
        finally:
            await store.close()

    lock = key_users.lock_path(settings.resolved_database_url)
    with contextlib.ExitStack() as stack:
        if lock is not None:
            users = stack.enter_context(key_users.exclusive(lock, force=force))
            if users:
                refused(secret_keys.refusal(users))
        staged = None if settings.secret_key else secret_keys.stage_key_file(key_file, key)
        try:
            count = asyncio.run(main())
        except errors.ConsentRelayError as exc:
            if staged is not None:
                staged.unlink()
            refused(exc)
        if staged is not None:
            os.replace(staged, key_file)  # before the lock goes: starters read the new key
    if staged is None:
        console.print(f"re-encrypted {count} secrets. Set CONSENT_RELAY_SECRET_KEY={key}")
    else:
        console.print(f"re-encrypted {count} secrets; new key written to {key_file}")
