"""What the storage layer hands out and takes in: plain dataclasses, no SQL."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class DeliveryRecord:
    organization_id: str
    id: str
    webhook_id: str
    message_id: str
    user_id: str
    seq: int
    status: str
    attempt_count: int
    due_ms: int | None
    created_at: str
    updated_at: str
    last_outcome: str | None
    pk: int | None = None
    type: str = ""
    attempts: list[AttemptRecord] = field(default_factory=list)


@dataclass
class AttemptRecord:
    id: str
    delivery_id: str
    attempt_number: int
    started_at: str
    duration_ms: int
    outcome: str
    status_code: int | None
    response_body: str | None
    request_headers: dict[str, str] | None
    error: str | None
