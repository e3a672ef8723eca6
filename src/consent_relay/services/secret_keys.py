"""Re-encrypting every stored secret under a new key (``consent-relay rotate-secret-key``).

The rotation needs the database to itself: a ``serve`` or ``worker`` running on the old key
would keep writing secrets under it (a webhook created meanwhile would be lost to the new
key) and could not open the re-encrypted ones. So it refuses while anything else uses the
database, naming what does, unless forced:

- SQLite: the processes holding the key (``key_users``, a file lock that every process using
  the key holds; the CLI takes it exclusively around the whole rotation);
- PostgreSQL: every other session on the database (``pg_stat_activity``), checked inside the
  rotation's transaction once webhooks are locked against writes, so none slips in between.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from consent_relay import errors
from consent_relay.crypto import SecretBox
from consent_relay.storage.records import DatabaseSession, WebhookRecord
from consent_relay.storage.store import Store

CLOSING_GRACE = 2.0  # seconds for sessions that are closing (a process just stopped) to go


class InUse(errors.Conflict):
    """Something else uses the database: the rotation is refused, nothing changed."""


def refusal(users: list[str]) -> InUse:
    listed = "".join(f"\n  - {user}" for user in users)
    return InUse(
        f"the database is in use by:{listed}\nStop every consent-relay serve and worker "
        "first: they hold the old key (webhooks they create would be lost to the new key, "
        "and they cannot read the re-encrypted secrets). --force rotates anyway, if these "
        "are not ours; then restart them with the new key."
    )


def describe(session: DatabaseSession) -> str:
    name = f"application {session.application_name!r}" if session.application_name else "a client"
    where = f" from {session.client}" if session.client else " (local socket)"
    return f"PostgreSQL session pid {session.pid}: {name}{where}, connected since {session.since}"


async def other_sessions(store: Store, *, grace: float = CLOSING_GRACE) -> list[str]:
    """The other sessions on the database, after giving closing ones ``grace`` seconds to go."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while True:
        async with store.read() as tx:
            sessions = await tx.other_sessions()
        if not sessions or loop.time() >= deadline:
            return [describe(session) for session in sessions]
        await asyncio.sleep(0.1)


async def reencrypt(store: Store, old_key: str, new_key: str, *, force: bool = False) -> int:
    """Every webhook secret decrypted with ``old_key`` and encrypted with ``new_key``, in one
    transaction; custom header values stored in clear (from before they were encrypted) are
    encrypted too. Returns how many secrets were rewritten. A secret that ``old_key`` cannot
    open stops it all, naming its webhook: nothing is changed. On PostgreSQL, unless
    ``force``, raises ``InUse`` when another session uses the database."""
    if not force and (users := await other_sessions(store)):
        raise refusal(users)
    box = SecretBox([new_key, old_key])
    count = 0
    async with store.write() as tx:
        await tx.lock_webhooks_against_writes()
        if not force and (sessions := await tx.other_sessions()):
            raise refusal([describe(session) for session in sessions])
        for hook in await tx.list_all_webhooks():
            try:
                count += _reencrypt(box, hook)
            except errors.BadRequest as exc:
                raise errors.BadRequest(
                    f"webhook {hook.id}: a stored secret cannot be decrypted with the old key; "
                    "nothing was re-encrypted"
                ) from exc
            await tx.update_webhook(hook)
    return count


def _reencrypt(box: SecretBox, hook: WebhookRecord) -> int:
    hook.signing_secret = box.rotate(hook.signing_secret)
    count = 1
    if hook.previous_signing_secret:
        hook.previous_signing_secret = box.rotate(hook.previous_signing_secret)
        count += 1
    if hook.auth_secret:
        hook.auth_secret = box.rotate(hook.auth_secret)
        count += 1
    hook.headers = {name: box.reseal(value) for name, value in hook.headers.items()}
    count += len(hook.headers)
    token_headers = (hook.authentication or {}).get("token_request_headers") or {}
    if hook.authentication is not None and token_headers:
        hook.authentication = {
            **hook.authentication,
            "token_request_headers": {n: box.reseal(v) for n, v in token_headers.items()},
        }
        count += len(token_headers)
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
