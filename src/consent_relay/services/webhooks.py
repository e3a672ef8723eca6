"""Webhook configuration: per organization, secrets encrypted, signing secret shown once.

Secrets: the signing secrets, the OAuth client secret and the values of custom headers (often
an ``X-Api-Key``; the OAuth token request's headers too) are stored encrypted (``SecretBox``)
and opened only to prepare deliveries (``security.webhook_secrets``). Header values are masked
in every answer, the creation's included: ``{"X-Api-Key": "********"}``. A PATCH that sends a
header's value as the mask keeps the stored value, so a GET-edit-PATCH round trip never loses
one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from consent_relay import crypto, errors, header_rules, ids
from consent_relay.crypto import SecretBox
from consent_relay.domain import samples
from consent_relay.domain.timefmt import format_ts, from_ms, now_ts
from consent_relay.runtime import Context
from consent_relay.schemas import OAuthIn, WebhookIn, WebhookPatch
from consent_relay.security import signing, targets, webhook_secrets
from consent_relay.services import pagination, views
from consent_relay.storage import flow, queue
from consent_relay.storage.records import MessageRecord, NewDelivery, WebhookRecord

JSON = dict[str, Any]
ROTATION_OVERLAP = timedelta(hours=24)
MASK = "********"  # a stored header value, as answers show it (and as a PATCH keeps it)


# -- sealing secrets (opening them: security.webhook_secrets) -------------------------------------


def _seal_headers(
    box: SecretBox, given: dict[str, str], stored: dict[str, str], field: str = "headers"
) -> dict[str, str]:
    """The given headers with their values sealed. A value given as ``MASK`` keeps the value
    stored under that name (compared without case, as HTTP does); a mask with nothing stored
    to keep is refused (on ``field.<name>``)."""
    stored_by_name = {name.lower(): value for name, value in stored.items()}
    sealed = {}
    for name, value in given.items():
        if value != MASK:
            sealed[name] = box.seal(value)
            continue
        kept = stored.get(name, stored_by_name.get(name.lower()))
        if kept is None:
            raise errors.Unprocessable(
                f"header {name!r} is given as the mask {MASK!r}, which keeps a stored value, "
                "but none is stored",
                [errors.FieldError(f"{field}.{name}", "has no stored value to keep: give it")],
            )
        sealed[name] = kept if crypto.is_sealed(kept) else box.seal(kept)
    return sealed


# -- views -------------------------------------------------------------------------------------


def webhook_view(
    box: SecretBox, hook: WebhookRecord, paused_until_ms: int | None = None
) -> views.WebhookOut:
    """A webhook as answers show it: no secret, header values masked, and ``status``
    ``broken`` (with ``status_reason``) when this key cannot open its secrets;
    ``paused_until`` while its receiver asked us to wait (``storage.flow.paused_until``)."""
    auth = None
    if hook.authentication is not None:
        token_headers = hook.authentication.get("token_request_headers") or {}
        auth = {
            **hook.authentication,
            "token_request_headers": {name: MASK for name in token_headers},
            "client_secret_set": hook.auth_secret is not None,
        }
    reason = webhook_secrets.broken_reason(box, hook)
    return {
        "id": hook.id,
        "organization_id": hook.organization_id,
        "url": hook.url,
        "enabled": hook.enabled,
        "status": "ok" if reason is None else "broken",
        "status_reason": reason,
        "event_types": hook.event_types,
        "regulations": hook.regulations,
        "flatten": hook.flatten,
        "headers": {name: MASK for name in hook.headers},
        "authentication": auth,
        "description": hook.description,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
        "rate_limit": hook.rate_limit,
        "auto_replay": hook.auto_replay,
        "disabled_reason": hook.disabled_reason,
        "paused_until": None if paused_until_ms is None else from_ms(paused_until_ms),
    }


# -- use cases ---------------------------------------------------------------------------------


async def _check_destination(ctx: Context, url: str, field: str) -> None:
    try:
        await targets.check_url_resolved(
            url,
            targets.parse_networks(ctx.settings.allowed_networks),
            require_https=ctx.settings.require_https,
        )
    except errors.ForbiddenTarget as exc:
        raise errors.ForbiddenTarget(exc.detail, [errors.FieldError(field, exc.detail)]) from exc


def _auth_settings(box: SecretBox, auth: OAuthIn, stored: JSON | None) -> JSON:
    """The OAuth settings to store: no client secret (stored apart), token request header
    values sealed (a mask keeps the value stored in ``stored``, the settings being replaced)."""
    settings = auth.model_dump(mode="json", exclude={"client_secret"})
    kept = (stored or {}).get("token_request_headers") or {}
    settings["token_request_headers"] = _seal_headers(
        box, auth.token_request_headers, kept, "authentication.token_request_headers"
    )
    return settings


def _secret_required() -> errors.Unprocessable:
    return errors.Unprocessable(
        "OAuth needs a client secret",
        [errors.FieldError("authentication.client_secret", "is required")],
    )


async def create_webhook(ctx: Context, org_id: str, data: WebhookIn) -> views.WebhookWithSecretOut:
    if data.authentication is not None and not data.authentication.client_secret:
        raise _secret_required()
    url = str(data.url)
    await _check_destination(ctx, url, "url")
    if data.authentication is not None:
        await _check_destination(
            ctx, str(data.authentication.token_url), "authentication.token_url"
        )
    now = now_ts()
    secret = signing.new_secret()
    auth = data.authentication
    hook = WebhookRecord(
        organization_id=org_id,
        id=ids.new_id("wh"),
        url=url,
        enabled=data.enabled,
        event_types=data.event_types,
        regulations=list(dict.fromkeys(data.regulations)),
        flatten=data.flatten,
        headers=_seal_headers(ctx.box, data.headers, {}),
        authentication=_auth_settings(ctx.box, auth, None) if auth else None,
        auth_secret=ctx.box.encrypt(auth.client_secret) if auth and auth.client_secret else None,
        signing_secret=ctx.box.encrypt(secret),
        previous_signing_secret=None,
        previous_secret_expires_at=None,
        description=data.description,
        created_at=now,
        updated_at=now,
        rate_limit=data.rate_limit,
        auto_replay=data.auto_replay,
    )
    async with ctx.store.write() as tx:
        await tx.insert_webhook(hook)
        if hook.rate_limit is not None:
            await flow.ensure_bucket(tx, hook.id, ctx.clock_ms())
    return views.WebhookWithSecretOut(**webhook_view(ctx.box, hook), signing_secret=secret)


async def _owned(ctx: Context, org_id: str, webhook_id: str) -> WebhookRecord:
    async with ctx.store.read() as tx:
        hook = await tx.get_webhook(org_id, webhook_id)
    if hook is None:
        raise errors.NotFound(f"no webhook {webhook_id!r}")
    return hook


async def get_webhook(ctx: Context, org_id: str, webhook_id: str) -> views.WebhookOut:
    async with ctx.store.read() as tx:
        hook = await tx.get_webhook(org_id, webhook_id)
        if hook is None:
            raise errors.NotFound(f"no webhook {webhook_id!r}")
        paused = await flow.paused_until(tx, [webhook_id], ctx.clock_ms())
    return webhook_view(ctx.box, hook, paused.get(webhook_id))


async def list_webhooks(
    ctx: Context, org_id: str, *, cursor: str | None = None, limit: int = pagination.DEFAULT_LIMIT
) -> pagination.Page[views.WebhookOut]:
    after = pagination.decode(cursor)
    pagination.check_limit(limit)
    async with ctx.store.read() as tx:
        rows = await tx.list_webhooks(org_id, after_pk=after, limit=limit + 1)
        paused = await flow.paused_until(tx, [r.id for r in rows], ctx.clock_ms())
    return pagination.page(
        [webhook_view(ctx.box, r, paused.get(r.id)) for r in rows], [r.pk or 0 for r in rows], limit
    )


async def update_webhook(
    ctx: Context, org_id: str, webhook_id: str, patch: WebhookPatch
) -> views.WebhookOut:
    given = patch.model_fields_set
    for name in WebhookPatch.NOT_NULL:
        if name in given and getattr(patch, name) is None:
            raise errors.Unprocessable(
                f"{name} cannot be null", [errors.FieldError(name, "cannot be null")]
            )
    if patch.url is not None:
        await _check_destination(ctx, str(patch.url), "url")
    if patch.authentication is not None:
        await _check_destination(
            ctx, str(patch.authentication.token_url), "authentication.token_url"
        )
    async with ctx.store.write() as tx:
        hook = await tx.get_webhook(org_id, webhook_id)
        if hook is None:
            raise errors.NotFound(f"no webhook {webhook_id!r}")
        if patch.url is not None:
            hook.url = str(patch.url)
        for name in ("enabled", "event_types", "flatten", "description", "auto_replay"):
            value = getattr(patch, name)
            if value is not None:
                setattr(hook, name, value)
        if patch.enabled:
            hook.disabled_reason = None  # enabled again: the 410's note goes
        if "rate_limit" in given:
            hook.rate_limit = patch.rate_limit
        if patch.headers is not None:  # the whole set; a masked value keeps the stored one
            hook.headers = _seal_headers(ctx.box, patch.headers, hook.headers)
        if patch.regulations is not None:
            hook.regulations = list(dict.fromkeys(patch.regulations))
        if "authentication" in given:
            auth = patch.authentication
            if auth is None:
                hook.authentication, hook.auth_secret = None, None
            else:
                hook.authentication = _auth_settings(ctx.box, auth, hook.authentication)
                if auth.client_secret:
                    hook.auth_secret = ctx.box.encrypt(auth.client_secret)
                elif hook.auth_secret is None:
                    raise _secret_required()
        try:  # the patch against what is stored: new headers and stored OAuth, or the reverse
            header_rules.check_authorization_header(hook.headers, hook.authentication is not None)
        except ValueError as exc:
            field = "headers" if "headers" in given else "authentication"
            raise errors.Unprocessable(str(exc), [errors.FieldError(field, str(exc))]) from exc
        hook.updated_at = now_ts()
        await tx.update_webhook(hook)
        if hook.rate_limit is not None:
            await flow.ensure_bucket(tx, hook.id, ctx.clock_ms())
        paused = await flow.paused_until(tx, [webhook_id], ctx.clock_ms())
    if patch.enabled:
        ctx.notify_enqueued()  # paused deliveries may go now
    return webhook_view(ctx.box, hook, paused.get(webhook_id))


async def delete_webhook(ctx: Context, org_id: str, webhook_id: str) -> None:
    async with ctx.store.write() as tx:
        if await tx.get_webhook(org_id, webhook_id) is None:
            raise errors.NotFound(f"no webhook {webhook_id!r}")
        await tx.delete_webhook(org_id, webhook_id)


async def rotate_secret(ctx: Context, org_id: str, webhook_id: str) -> views.WebhookWithSecretOut:
    """A new signing secret; the old one keeps signing beside it for 24 hours, unless the
    key cannot open it (a broken webhook): then it goes, and the rotation repairs it."""
    secret = signing.new_secret()
    async with ctx.store.write() as tx:
        hook = await tx.get_webhook(org_id, webhook_id)
        if hook is None:
            raise errors.NotFound(f"no webhook {webhook_id!r}")
        try:
            ctx.box.decrypt(hook.signing_secret)
        except errors.BadRequest:
            hook.previous_signing_secret, hook.previous_secret_expires_at = None, None
        else:
            hook.previous_signing_secret = hook.signing_secret
            hook.previous_secret_expires_at = format_ts(datetime.now(UTC) + ROTATION_OVERLAP)
        hook.signing_secret = ctx.box.encrypt(secret)
        hook.updated_at = now_ts()
        await tx.update_webhook(hook)
    return views.WebhookWithSecretOut(**webhook_view(ctx.box, hook), signing_secret=secret)


async def send_test(
    ctx: Context, org_id: str, webhook_id: str, message_type: str
) -> views.TestSentOut:
    """Queue a sample message to this webhook only; it goes out like any other delivery
    (signed, retried, listed with its attempts), as the webhook's reserved test user, so it
    queues behind earlier test sends only, never behind a real user's deliveries."""
    now = now_ts()
    user_id = samples.test_user_id(webhook_id)
    message = MessageRecord(
        organization_id=org_id,
        id=ids.new_id("msg"),
        type=message_type,
        regulation="gdpr",
        user_id=user_id,
        parameters=samples.sample_parameters(message_type, user_id=user_id),
        created_at=now,
    )
    delivery = NewDelivery(message=message, webhook_id=webhook_id)
    async with ctx.store.write() as tx:
        if await tx.get_webhook(org_id, webhook_id) is None:
            raise errors.NotFound(f"no webhook {webhook_id!r}")
        await queue.enqueue(tx, [message], [delivery], ctx.clock_ms(), now)
    ctx.notify_enqueued()
    return {"message_id": message.id, "delivery_id": delivery.id, "type": message_type}
