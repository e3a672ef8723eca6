"""Webhook configuration: per organization, secrets encrypted, signing secret shown once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from consent_relay import errors, ids
from consent_relay.delivery import signing, targets
from consent_relay.domain import samples
from consent_relay.domain.timefmt import format_ts, now_ts
from consent_relay.schemas import OAuthIn, WebhookIn, WebhookPatch
from consent_relay.services import pagination
from consent_relay.services.context import Context
from consent_relay.storage import queue
from consent_relay.storage.records import MessageRecord, NewDelivery, WebhookRecord

JSON = dict[str, Any]
ROTATION_OVERLAP = timedelta(hours=24)


def webhook_view(hook: WebhookRecord) -> JSON:
    auth = None
    if hook.authentication is not None:
        auth = {**hook.authentication, "client_secret_set": hook.auth_secret is not None}
    return {
        "id": hook.id,
        "organization_id": hook.organization_id,
        "url": hook.url,
        "enabled": hook.enabled,
        "event_types": hook.event_types,
        "regulations": hook.regulations,
        "flatten": hook.flatten,
        "headers": hook.headers,
        "authentication": auth,
        "description": hook.description,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
    }


async def _check_destination(ctx: Context, url: str, field: str) -> None:
    try:
        await targets.check_url_resolved(
            url,
            targets.parse_networks(ctx.settings.allowed_networks),
            require_https=ctx.settings.require_https,
        )
    except errors.ForbiddenTarget as exc:
        raise errors.ForbiddenTarget(exc.detail, [errors.FieldError(field, exc.detail)]) from exc


def _auth_settings(auth: OAuthIn) -> JSON:
    return auth.model_dump(mode="json", exclude={"client_secret"})


def _secret_required() -> errors.Unprocessable:
    return errors.Unprocessable(
        "OAuth needs a client secret",
        [errors.FieldError("authentication.client_secret", "is required")],
    )


async def create_webhook(ctx: Context, org_id: str, data: WebhookIn) -> JSON:
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
        headers=data.headers,
        authentication=_auth_settings(auth) if auth else None,
        auth_secret=ctx.box.encrypt(auth.client_secret) if auth and auth.client_secret else None,
        signing_secret=ctx.box.encrypt(secret),
        previous_signing_secret=None,
        previous_secret_expires_at=None,
        description=data.description,
        created_at=now,
        updated_at=now,
    )
    async with ctx.store.write() as tx:
        await tx.insert_webhook(hook)
    return {**webhook_view(hook), "signing_secret": secret}


async def _owned(ctx: Context, org_id: str, webhook_id: str) -> WebhookRecord:
    async with ctx.store.read() as tx:
        hook = await tx.get_webhook(org_id, webhook_id)
    if hook is None:
        raise errors.NotFound(f"no webhook {webhook_id!r}")
    return hook


async def get_webhook(ctx: Context, org_id: str, webhook_id: str) -> JSON:
    return webhook_view(await _owned(ctx, org_id, webhook_id))


async def list_webhooks(
    ctx: Context, org_id: str, *, cursor: str | None = None, limit: int = pagination.DEFAULT_LIMIT
) -> JSON:
    after = pagination.decode(cursor)
    pagination.check_limit(limit)
    async with ctx.store.read() as tx:
        rows = await tx.list_webhooks(org_id, after_pk=after, limit=limit + 1)
    return pagination.page([webhook_view(r) for r in rows], [r.pk or 0 for r in rows], limit)


async def update_webhook(ctx: Context, org_id: str, webhook_id: str, patch: WebhookPatch) -> JSON:
    given = patch.model_fields_set
    for name in ("url", "enabled", "event_types", "regulations", "flatten", "headers"):
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
        for name in ("enabled", "event_types", "flatten", "headers", "description"):
            value = getattr(patch, name)
            if value is not None:
                setattr(hook, name, value)
        if patch.regulations is not None:
            hook.regulations = list(dict.fromkeys(patch.regulations))
        if "authentication" in given:
            auth = patch.authentication
            if auth is None:
                hook.authentication, hook.auth_secret = None, None
            else:
                hook.authentication = _auth_settings(auth)
                if auth.client_secret:
                    hook.auth_secret = ctx.box.encrypt(auth.client_secret)
                elif hook.auth_secret is None:
                    raise _secret_required()
        hook.updated_at = now_ts()
        await tx.update_webhook(hook)
    if patch.enabled:
        ctx.notify_enqueued()  # paused deliveries may go now
    return webhook_view(hook)


async def delete_webhook(ctx: Context, org_id: str, webhook_id: str) -> None:
    async with ctx.store.write() as tx:
        if await tx.get_webhook(org_id, webhook_id) is None:
            raise errors.NotFound(f"no webhook {webhook_id!r}")
        await tx.delete_webhook(org_id, webhook_id)


async def rotate_secret(ctx: Context, org_id: str, webhook_id: str) -> JSON:
    """A new signing secret; the old one keeps signing beside it for 24 hours."""
    secret = signing.new_secret()
    async with ctx.store.write() as tx:
        hook = await tx.get_webhook(org_id, webhook_id)
        if hook is None:
            raise errors.NotFound(f"no webhook {webhook_id!r}")
        hook.previous_signing_secret = hook.signing_secret
        hook.previous_secret_expires_at = format_ts(datetime.now(UTC) + ROTATION_OVERLAP)
        hook.signing_secret = ctx.box.encrypt(secret)
        hook.updated_at = now_ts()
        await tx.update_webhook(hook)
    return {**webhook_view(hook), "signing_secret": secret}


def signing_secrets(ctx: Context, hook: WebhookRecord, now: str) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one until its
    overlap ends."""
    secrets = [ctx.box.decrypt(hook.signing_secret)]
    if hook.previous_signing_secret and (hook.previous_secret_expires_at or "") > now:
        secrets.append(ctx.box.decrypt(hook.previous_signing_secret))
    return secrets


async def send_test(ctx: Context, org_id: str, webhook_id: str, message_type: str) -> JSON:
    """Queue a sample message to this webhook only; it goes out like any other delivery
    (signed, retried, listed with its attempts)."""
    now = now_ts()
    message = MessageRecord(
        organization_id=org_id,
        id=ids.new_id("msg"),
        type=message_type,
        regulation="gdpr",
        user_id=samples.SAMPLE_USER_ID,
        parameters=samples.sample_parameters(message_type),
        created_at=now,
    )
    delivery = NewDelivery(message=message, webhook_id=webhook_id)
    async with ctx.store.write() as tx:
        if await tx.get_webhook(org_id, webhook_id) is None:
            raise errors.NotFound(f"no webhook {webhook_id!r}")
        await queue.enqueue(tx, [message], [delivery], ctx.clock_ms(), now)
    ctx.notify_enqueued()
    return {"message_id": message.id, "delivery_id": delivery.id, "type": message_type}
