"""What goes on the wire for one delivery: the body and the headers.

Webhook settings are prepared once (secrets decrypted, static headers merged) and kept in a
small cache that the worker refreshes every few seconds, so the hot path does no crypto but
the signature itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from consent_relay import errors
from consent_relay.delivery import sender
from consent_relay.domain import payloads
from consent_relay.domain.timefmt import now_ts
from consent_relay.runtime import Context
from consent_relay.security import signing, webhook_secrets
from consent_relay.storage.records import WebhookRecord

log = logging.getLogger("consent_relay.worker")


@dataclass(frozen=True)
class PreparedWebhook:
    id: str
    url: str
    flatten: bool
    include_regulation: bool
    headers: dict[str, str]  # static: content type, user agent, the webhook's own
    secrets: list[str]
    authentication: dict[str, Any] | None
    auth_secret: str | None
    shown: dict[str, str] = field(default_factory=dict)  # ``headers`` as stored (redacted)


def prepare(ctx: Context, hook: WebhookRecord) -> PreparedWebhook:
    """The webhook ready to send: its secrets (header values included) decrypted, here only.
    Raises ``errors.BadRequest`` when the key cannot open them."""
    secrets = webhook_secrets.open_secrets(ctx.box, hook, now_ts())
    headers = {"Content-Type": "application/json", "User-Agent": sender.USER_AGENT}
    headers.update(secrets.headers)
    return PreparedWebhook(
        id=hook.id,
        url=hook.url,
        flatten=hook.flatten,
        include_regulation=payloads.include_regulation_for(hook.regulations),
        headers=headers,
        secrets=secrets.signing,
        authentication=secrets.authentication,
        auth_secret=secrets.auth_secret,
        shown=redacted(headers),
    )


# The headers of ours whose values say nothing secret. Custom headers cannot take these names
# (schemas.RESERVED_HEADERS), so every other header is Authorization or one of the webhook's
# own, whose values are secrets.
SHOWN_HEADERS = frozenset(
    {"content-type", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature"}
)
REDACTED = "[redacted]"


def redacted(headers: dict[str, str]) -> dict[str, str]:
    """The headers of an attempt as stored with it: names all kept; values kept only for
    ``SHOWN_HEADERS``. Authorization and every custom header of the webhook are redacted
    (and anything else that is not ours: unknown means secret)."""
    return {
        name: value if name.lower() in SHOWN_HEADERS else REDACTED
        for name, value in headers.items()
    }


def render(hook: PreparedWebhook, message: dict[str, Any]) -> bytes:
    """The body for this webhook. The common case splices the stored JSON, unparsed."""
    if not hook.flatten and not hook.include_regulation:
        type_json = orjson.dumps(message["type"]).decode()
        return f'{{"type":{type_json},"parameters":{message["parameters"]}}}'.encode()
    return payloads.render_body(
        message["type"],
        orjson.loads(message["parameters"]),
        message["regulation"],
        flatten=hook.flatten,
        include_regulation=hook.include_regulation,
    )


def headers_for(hook: PreparedWebhook, message_id: str, body: bytes) -> dict[str, str]:
    return {**hook.headers, **signing.headers(hook.secrets, message_id, int(time.time()), body)}


def stored_headers(hook: PreparedWebhook, headers: dict[str, str]) -> dict[str, str]:
    """``redacted(headers)`` for headers made by ``headers_for`` (and the attempt, which may
    add Authorization), from the webhook's static part redacted once, in ``prepare``."""
    shown = {**hook.shown}
    for name, value in headers.items():
        if name not in shown:
            shown[name] = value if name.lower() in SHOWN_HEADERS else REDACTED
    return shown


@dataclass
class WebhookCache:
    """The prepared webhooks a worker delivers to, by id.

    A webhook is read and prepared when a claim first needs it; those a claim needed in the
    last ``idle_after`` seconds (and the broken ones) are read and prepared again, together,
    once ``max_age`` seconds old, so a change to a webhook reaches the worker within
    ``max_age`` and a previous signing secret stops signing once its overlap ends. The rest
    are let go. The worker's cost follows the webhooks it delivers to, not every webhook in
    the database: reading and preparing all of them every two seconds blocked the event loop
    for 100-208 ms at a time with 5,000 webhooks (docs/performance-log.md).
    """

    ctx: Context
    max_age: float = 2.0
    idle_after: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _hooks: dict[str, PreparedWebhook] = field(default_factory=dict)
    # Webhooks that cannot be prepared (a secret under another key): not claimed by this
    # worker until they can, so their deliveries wait, unleased, for a worker that can.
    broken: set[str] = field(default_factory=set)
    _used: dict[str, float] = field(default_factory=dict)  # id -> when a claim last needed it
    _loaded_at: float = -1e9

    async def get_many(self, webhook_ids: set[str]) -> dict[str, PreparedWebhook]:
        """Those of ``webhook_ids`` that exist and can be prepared (and others held)."""
        now = self.clock()
        for hook_id in webhook_ids:
            self._used[hook_id] = now
        if now - self._loaded_at > self.max_age:
            await self._refresh(now)
        elif missing := webhook_ids - self._hooks.keys() - self.broken:
            await self._load(missing, whole=False)
        return self._hooks

    async def refresh_if_stale(self) -> None:
        now = self.clock()
        if now - self._loaded_at > self.max_age:
            await self._refresh(now)

    async def _refresh(self, now: float) -> None:
        self._used = {i: used for i, used in self._used.items() if now - used <= self.idle_after}
        await self._load(self._used.keys() | self.broken, whole=True)
        self._loaded_at = now

    async def _load(self, webhook_ids: set[str], *, whole: bool) -> None:
        """Read and prepare ``webhook_ids``; with ``whole`` they are all the cache keeps."""
        hooks: list[WebhookRecord] = []
        if webhook_ids:
            async with self.ctx.store.read() as tx:
                hooks = await tx.webhooks_by_id(webhook_ids)
        prepared = {}
        broken = set()
        for hook in hooks:
            try:
                prepared[hook.id] = prepare(self.ctx, hook)
            except errors.ConsentRelayError as exc:
                # e.g. a secret encrypted under another key: hold this webhook's deliveries
                # (they stay queued) rather than stop delivering for everyone. Said once,
                # when it happens (the API, dashboard and metrics show it while it lasts).
                if hook.id not in self.broken:
                    log.error("webhook %s cannot be prepared: %s", hook.id, exc.detail)
                broken.add(hook.id)
        for hook_id in self.broken & prepared.keys():
            log.warning("webhook %s can be prepared again", hook_id)
        if whole:
            self._hooks, self.broken = prepared, broken
        else:
            self._hooks.update(prepared)
            self.broken |= broken
