"""A webhook's secrets, opened: the signing secrets, the OAuth client secret and the values
of custom headers (and of the OAuth token request's headers).

They are stored encrypted (``crypto.SecretBox``) and opened here only, to prepare deliveries
(``open_secrets``) and to tell whether this process's key can (``broken_reason``): a webhook
whose secrets were encrypted under another key is "broken", its deliveries wait. The webhook
is anything with the stored fields (``SealedWebhook``; ``storage.records.WebhookRecord``), so
this module needs nothing of storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from consent_relay import errors
from consent_relay.crypto import SecretBox
from consent_relay.domain.timefmt import now_ts

JSON = dict[str, Any]
KEY_HINT = (
    "secrets cannot be decrypted with the current key (CONSENT_RELAY_SECRET_KEY or "
    "DATA_DIR/secret.key): its deliveries wait until a process runs with the key that "
    "encrypted them"
)


class SealedWebhook(Protocol):
    """A webhook's secrets as stored."""

    @property
    def signing_secret(self) -> str: ...  # encrypted
    @property
    def previous_signing_secret(self) -> str | None: ...  # encrypted
    @property
    def previous_secret_expires_at(self) -> str | None: ...
    @property
    def auth_secret(self) -> str | None: ...  # encrypted
    @property
    def headers(self) -> dict[str, str]: ...  # values sealed (or legacy clear text)
    @property
    def authentication(self) -> JSON | None: ...  # token request header values sealed


@dataclass(frozen=True)
class Secrets:
    """A webhook's secrets in clear: for preparing its deliveries, never for an answer."""

    signing: list[str]  # the current signing secret, then the previous one during its overlap
    auth_secret: str | None
    headers: dict[str, str]
    authentication: JSON | None  # the OAuth settings, token request header values opened


def _open(box: SecretBox, value: str, what: str, *, header: bool = False) -> str:
    try:
        return box.unseal(value) if header else box.decrypt(value)
    except errors.BadRequest as exc:
        raise errors.BadRequest(f"{what}: {KEY_HINT}") from exc


def open_secrets(box: SecretBox, hook: SealedWebhook, now: str) -> Secrets:
    """Every secret that a delivery needs now, decrypted. Header values stored in clear
    before they were encrypted are taken as they are. Raises ``errors.BadRequest`` naming the
    secret that the key cannot open."""
    secrets = [_open(box, hook.signing_secret, "the signing secret")]
    if hook.previous_signing_secret and (hook.previous_secret_expires_at or "") > now:
        secrets.append(_open(box, hook.previous_signing_secret, "the previous signing secret"))
    auth = _open(box, hook.auth_secret, "the OAuth client secret") if hook.auth_secret else None
    authentication = None
    if hook.authentication is not None:
        token_headers = hook.authentication.get("token_request_headers") or {}
        authentication = {
            **hook.authentication,
            "token_request_headers": _open_headers(box, token_headers, "token request header"),
        }
    return Secrets(
        signing=secrets,
        auth_secret=auth,
        headers=_open_headers(box, hook.headers, "header"),
        authentication=authentication,
    )


def _open_headers(box: SecretBox, headers: dict[str, str], what: str) -> dict[str, str]:
    return {
        name: _open(box, value, f"the value of {what} {name}", header=True)
        for name, value in headers.items()
    }


def broken_reason(box: SecretBox, hook: SealedWebhook) -> str | None:
    """Why the webhook's deliveries cannot be prepared with this key, or None."""
    try:
        open_secrets(box, hook, now_ts())
    except errors.BadRequest as exc:
        return exc.detail
    return None


def signing_secrets(box: SecretBox, hook: SealedWebhook, now: str) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one until its
    overlap ends."""
    secrets = [box.decrypt(hook.signing_secret)]
    if hook.previous_signing_secret and (hook.previous_secret_expires_at or "") > now:
        secrets.append(box.decrypt(hook.previous_signing_secret))
    return secrets
