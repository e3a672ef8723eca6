"""What the storage layer hands out and takes in: plain dataclasses, no SQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consent_relay.domain.users import UserState

JSON = dict[str, Any]


@dataclass
class Organization:
    id: str
    name: str
    created_at: str


@dataclass
class ApiKey:
    id: str
    organization_id: str
    prefix: str
    name: str
    created_at: str
    revoked_at: str | None = None


@dataclass
class UserRecord:
    organization_id: str
    id: str
    identity_organization_user_id: str | None
    state: UserState
    version: int
    created_at: str
    updated_at: str
    seq_counter: int = 0
    applied_at: str = ""
    applied_seq: int = 0
    pk: int | None = None

    def next_seq(self) -> int:
        self.seq_counter += 1
        return self.seq_counter


@dataclass
class EventRecord:
    organization_id: str
    id: str
    user_id: str
    status: str
    regulation: str
    created_at: str
    updated_at: str
    confirmed_at: str | None
    seq: int | None
    document: JSON
    pk: int | None = None


@dataclass
class WebhookRecord:
    organization_id: str
    id: str
    url: str
    enabled: bool
    event_types: list[str]
    regulations: list[str]
    flatten: bool
    headers: dict[str, str]
    authentication: JSON | None  # OAuth settings without the client secret
    auth_secret: str | None  # encrypted
    signing_secret: str  # encrypted
    previous_signing_secret: str | None  # encrypted
    previous_secret_expires_at: str | None
    description: str
    created_at: str
    updated_at: str
    pk: int | None = None
    rate_limit: float | None = None  # requests per second (migration 0006)
    auto_replay: bool = True
    disabled_reason: str | None = None


@dataclass(frozen=True)
class DatabaseSession:
    """Another client's session on our PostgreSQL database (pg_stat_activity)."""

    pid: int
    application_name: str
    client: str | None  # address, None for a Unix socket
    since: str  # when it connected


@dataclass
class MessageRecord:
    organization_id: str
    id: str
    type: str
    regulation: str
    user_id: str
    parameters: JSON
    created_at: str


@dataclass
class NewDelivery:
    message: MessageRecord
    webhook_id: str
    id: str = ""


@dataclass(frozen=True)
class DeliveryRecord:
    """A delivery (message x webhook) as read, with its message's type."""

    organization_id: str
    id: str
    webhook_id: str
    message_id: str
    user_id: str
    seq: int
    status: str  # pending | delivered | dead
    attempt_count: int
    due_ms: int | None  # set on the head of its user's queue only
    lease_owner: str | None  # a worker holds it (sending) while set
    created_at: str
    updated_at: str
    last_outcome: str | None
    replay_of: str | None
    replayed_by: str | None
    pk: int
    type: str


@dataclass(frozen=True)
class AttemptRecord:
    """One HTTP try of a delivery (immutable once recorded)."""

    id: str
    delivery_id: str
    attempt_number: int
    started_at: str
    duration_ms: int
    outcome: str
    status_code: int | None
    response_body: str | None
    response_bytes: int | None
    request_headers: dict[str, str] | None
    error: str | None


@dataclass(frozen=True)
class StoredMessage:
    """A delivery's message as kept: ``parameters`` is None once purged, and then
    ``purge_reason`` ("erased" | "expired") and ``purged_at`` say why and when."""

    id: str
    type: str
    regulation: str
    parameters: JSON | None
    purge_reason: str | None
    purged_at: str | None


@dataclass(frozen=True)
class DeliveryDetail:
    delivery: DeliveryRecord
    message: StoredMessage
    attempts: list[AttemptRecord]


@dataclass(frozen=True)
class LastFailure:
    """The newest failed attempt among a webhook's recent deliveries."""

    delivery_id: str
    started_at: str
    outcome: str
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class HealthFigures:
    """A webhook's delivery figures, as the dashboard's health shows them."""

    attempts: int  # attempts in the window, among the recent deliveries
    succeeded: int
    queue_depth: int  # pending deliveries
    oldest_waiting: str | None  # created_at of the oldest pending delivery
    dead_letters: int  # dead and not replayed
    last_failure: LastFailure | None


@dataclass(frozen=True)
class QueueFigures:
    """A webhook's queue, as the metrics' gauges show it."""

    webhook_id: str
    pending: int
    oldest_due_ms: int | None  # the oldest due, unleased pending delivery
    dead: int  # dead letters, replayed or not
