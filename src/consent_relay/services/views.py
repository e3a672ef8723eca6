"""What the service answers: one typed shape per resource, for the API, the CLI and the
dashboard alike.

The shapes are ``TypedDict``s: the service builds plain dicts (no model is constructed on the
hot path, and the API sends them with orjson as they are), mypy checks every key, and the
routes declare them as response models, so the OpenAPI document shows each answer's fields.
One delivery view serves the API's list and detail, the CLI's tables and the dashboard.
"""

from __future__ import annotations

from typing import Any, Literal

from typing_extensions import TypedDict  # pydantic reads it as a response model on 3.11

from consent_relay.domain.timefmt import from_ms
from consent_relay.services.pagination import Page
from consent_relay.storage.records import AttemptRecord, DeliveryRecord

JSON = dict[str, Any]
__all__ = ["Page"]  # pages of every listing: Page[DeliveryOut], Page[WebhookOut], ...


# -- consent events and users -----------------------------------------------------------------


class EventUserOut(TypedDict):
    id: str
    organization_user_id: str | None
    metadata: JSON
    country: str | None
    last_seen_country: str | None


class EventOut(TypedDict):
    """A consent event, as recorded (``consents`` as given: purposes, vendors, channels)."""

    id: str
    organization_id: str
    created_at: str
    updated_at: str
    status: Literal["confirmed", "pending_approval"]
    regulation: str
    metadata: JSON
    user: EventUserOut
    consents: JSON
    proofs_id: list[str]
    delegate: JSON | None


class UserOut(TypedDict):
    """A user's state, folded from their confirmed events, with one regulation's consents."""

    id: str
    organization_id: str
    organization_user_id: str | None
    version: int
    created_at: str
    updated_at: str
    metadata: JSON
    country: str | None
    last_seen_country: str | None
    consents: JSON


# -- webhooks ---------------------------------------------------------------------------------


class WebhookOut(TypedDict):
    """A webhook: no secret, header values masked; ``status`` is ``broken`` (with its
    reason) when the service's key cannot open the webhook's secrets."""

    id: str
    organization_id: str
    url: str
    enabled: bool
    status: Literal["ok", "broken"]
    status_reason: str | None
    event_types: list[str]
    regulations: list[str]
    flatten: bool
    headers: dict[str, str]
    authentication: JSON | None
    description: str
    created_at: str
    updated_at: str
    rate_limit: float | None  # requests per second, all workers together; null = none
    auto_replay: bool  # dead letters go out again once the receiver is back
    disabled_reason: str | None  # why we disabled it (e.g. "HTTP 410 at ..."); else null
    paused_until: str | None  # the receiver asked us to wait (Retry-After) until then


class WebhookWithSecretOut(WebhookOut):
    """A created webhook, or one whose signing secret was just rotated: the only answers
    that show the secret."""

    signing_secret: str


class TestSentOut(TypedDict):
    message_id: str
    delivery_id: str
    type: str


# -- deliveries and attempts ------------------------------------------------------------------


# superseded: a dead letter whose state a later delivered message replaced (never replayed
# but by explicit id with ``force``)
DeliveryStatus = Literal["pending", "delivered", "dead", "superseded"]


class DeliveryOut(TypedDict):
    """One message to one webhook, and where it stands."""

    id: str
    webhook_id: str
    message_id: str
    type: str
    user_id: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: str | None
    in_flight: bool
    last_outcome: str | None
    created_at: str
    updated_at: str
    replay_of: str | None
    replayed_by: str | None


class AttemptOut(TypedDict):
    """One HTTP try, as it went (bodies and headers as stored: redacted, at most 4 KiB)."""

    id: str
    attempt_number: int
    started_at: str
    duration_ms: int
    outcome: str
    status_code: int | None
    response_body: str | None
    response_bytes: int | None
    request_headers: dict[str, str] | None
    error: str | None


class PurgedOut(TypedDict):
    reason: str  # "payload erased" | "payload expired"
    at: str | None


class MessageOut(TypedDict):
    type: str
    regulation: str
    parameters: JSON | None  # null once purged
    purged: PurgedOut | None


class DeliveryDetailOut(DeliveryOut):
    message: MessageOut
    attempts: list[AttemptOut]


class ReplayedOut(TypedDict):
    replayed: int  # dead letters queued again


def delivery_view(delivery: DeliveryRecord) -> DeliveryOut:
    due = delivery.due_ms if delivery.status == "pending" and delivery.lease_owner is None else None
    status: DeliveryStatus = delivery.status  # type: ignore[assignment]
    return {
        "id": delivery.id,
        "webhook_id": delivery.webhook_id,
        "message_id": delivery.message_id,
        "type": delivery.type,
        "user_id": delivery.user_id,
        "status": status,
        "attempt_count": delivery.attempt_count,
        "next_attempt_at": from_ms(due) if due is not None else None,
        "in_flight": delivery.lease_owner is not None and delivery.status == "pending",
        "last_outcome": delivery.last_outcome,
        "created_at": delivery.created_at,
        "updated_at": delivery.updated_at,
        "replay_of": delivery.replay_of,
        "replayed_by": delivery.replayed_by,
    }


def attempt_view(attempt: AttemptRecord) -> AttemptOut:
    return {
        "id": attempt.id,
        "attempt_number": attempt.attempt_number,
        "started_at": attempt.started_at,
        "duration_ms": attempt.duration_ms,
        "outcome": attempt.outcome,
        "status_code": attempt.status_code,
        "response_body": attempt.response_body,
        "response_bytes": attempt.response_bytes,
        "request_headers": attempt.request_headers,
        "error": attempt.error,
    }
