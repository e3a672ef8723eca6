"""Rows and records: how a stored row becomes a record and a record becomes column values,
one place for each entity (users, events, webhooks), shared by ``Tx`` and by the set-based
and raw-driver statements. Nested JSON is stored as JSON text (``codec``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from consent_relay.domain.users import UserState
from consent_relay.storage import codec
from consent_relay.storage.records import EventRecord, UserRecord, WebhookRecord


def user(row: Row[Any]) -> UserRecord:
    state = UserState(
        organization_user_id=row.organization_user_id,
        metadata=codec.loads(row.metadata),
        country=row.country,
        last_seen_country=row.last_seen_country,
        consents=codec.loads(row.consents),
    )
    return UserRecord(
        organization_id=row.organization_id,
        id=row.id,
        identity_organization_user_id=row.identity_organization_user_id,
        state=state,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        seq_counter=row.seq_counter,
        applied_at=row.applied_at,
        applied_seq=row.applied_seq,
        pk=row.pk,
    )


def user_values(user: UserRecord) -> dict[str, Any]:
    return {
        "organization_id": user.organization_id,
        "id": user.id,
        "identity_organization_user_id": user.identity_organization_user_id,
        "organization_user_id": user.state.organization_user_id,
        "metadata": codec.dumps(user.state.metadata),
        "country": user.state.country,
        "last_seen_country": user.state.last_seen_country,
        "consents": codec.dumps(user.state.consents),
        "version": user.version,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "seq_counter": user.seq_counter,
        "applied_at": user.applied_at,
        "applied_seq": user.applied_seq,
    }


def event(row: Row[Any]) -> EventRecord:
    return EventRecord(
        organization_id=row.organization_id,
        id=row.id,
        user_id=row.user_id,
        status=row.status,
        regulation=row.regulation,
        created_at=row.created_at,
        updated_at=row.updated_at,
        confirmed_at=row.confirmed_at,
        seq=row.seq,
        document=codec.loads(row.document),
        pk=row.pk,
    )


def event_values(event: EventRecord) -> dict[str, Any]:
    return {
        "organization_id": event.organization_id,
        "id": event.id,
        "user_id": event.user_id,
        "status": event.status,
        "regulation": event.regulation,
        "created_at": event.created_at,
        "updated_at": event.updated_at,
        "confirmed_at": event.confirmed_at,
        "seq": event.seq,
        "document": codec.dumps(event.document),
    }


def webhook(row: Row[Any]) -> WebhookRecord:
    return WebhookRecord(
        organization_id=row.organization_id,
        id=row.id,
        url=row.url,
        enabled=bool(row.enabled),
        event_types=codec.loads(row.event_types),
        regulations=codec.loads(row.regulations),
        flatten=bool(row.flatten),
        headers=codec.loads(row.headers),
        authentication=codec.loads(row.authentication),
        auth_secret=row.auth_secret,
        signing_secret=row.signing_secret,
        previous_signing_secret=row.previous_signing_secret,
        previous_secret_expires_at=row.previous_secret_expires_at,
        description=row.description,
        created_at=row.created_at,
        updated_at=row.updated_at,
        pk=row.pk,
        rate_limit=row.rate_limit,
        auto_replay=bool(row.auto_replay),
        disabled_reason=row.disabled_reason,
    )


def webhook_values(hook: WebhookRecord) -> dict[str, Any]:
    return {
        "organization_id": hook.organization_id,
        "id": hook.id,
        "url": hook.url,
        "enabled": hook.enabled,
        "event_types": codec.dumps(hook.event_types),
        "regulations": codec.dumps(hook.regulations),
        "flatten": hook.flatten,
        "headers": codec.dumps(hook.headers),
        "authentication": None if hook.authentication is None else codec.dumps(hook.authentication),
        "auth_secret": hook.auth_secret,
        "signing_secret": hook.signing_secret,
        "previous_signing_secret": hook.previous_signing_secret,
        "previous_secret_expires_at": hook.previous_secret_expires_at,
        "description": hook.description,
        "created_at": hook.created_at,
        "updated_at": hook.updated_at,
        "rate_limit": hook.rate_limit,
        "auto_replay": hook.auto_replay,
        "disabled_reason": hook.disabled_reason,
    }


# Every change to webhooks bumps the organization's stamp (storage/webhook_versions.py).
