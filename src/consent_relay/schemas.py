"""Input shapes, validated with pydantic: what the API, the CLI and the dashboard accept.

Unknown fields are refused everywhere (``extra="forbid"``), so a typo is a 422 naming the
field, not a silently ignored setting.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    model_validator,
)

from consent_relay.domain.rules import EVENT_TYPES

REGULATIONS = (
    "gdpr", "ccpa", "cpra", "cpa", "ctdpa", "vcdpa", "ucpa", "lgpd", "pipeda", "pipl",
    "appi", "pdpa", "popia", "kvkk", "fadp", "dpdpa", "tdpsa", "ocpa", "mcdpa", "none",
)  # fmt: skip

MAX_JSON_DEPTH = 64  # metadata nesting; orjson refuses documents deeper than 255 levels


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000: refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


def _storable_json(value: Any, depth: int = 0) -> None:
    """Refuse what cannot be stored and sent back as JSON: lone surrogates, NaN/Infinity,
    integers beyond 64 bits, nesting deeper than MAX_JSON_DEPTH."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _storable_json(key, depth)
            _storable_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _storable_json(item, depth + 1)
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("holds a string that is not valid Unicode") from None
    elif isinstance(value, bool):
        return
    elif isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise ValueError("holds an integer beyond 64 bits")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("holds NaN or Infinity, which JSON cannot represent")


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    _storable_json(value)
    return value


def _utc(value: datetime | None) -> datetime | None:
    """Aware UTC (a naive time is UTC, not the server's local time), years 1000 to 9999."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not 1000 <= value.year <= 9999:
        raise ValueError("must be between years 1000 and 9999 (UTC)")
    return value


Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\s/?#\x00]+$")
]
ShortText = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_no_nul)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
Country = Annotated[str, StringConstraints(min_length=2, max_length=8), AfterValidator(_no_nul)]
OrganizationUserId = Annotated[
    str, StringConstraints(min_length=1, max_length=512), AfterValidator(_no_nul)
]
Timestamp = Annotated[datetime | None, AfterValidator(_utc)]


def _known_regulation(value: str) -> str:
    if value not in REGULATIONS:
        raise ValueError(f"unknown regulation {value!r}; known: {', '.join(REGULATIONS)}")
    return value


Regulation = Annotated[str, AfterValidator(_known_regulation)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique_ids(items: list[Any], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"{what} id {item.id!r} is listed twice")
        seen.add(item.id)


class PreferenceValue(Strict):
    value: str | None = None


class PurposeIn(Strict):
    id: Identifier
    enabled: bool | None = None
    enabled_li: bool | None = None
    metadata: Metadata = Field(default_factory=dict)
    values: dict[Identifier, PreferenceValue] = Field(default_factory=dict)


class ChannelIn(Strict):
    id: Identifier
    enabled: bool | None = None
    metadata: Metadata = Field(default_factory=dict)


class VendorsIn(Strict):
    enabled: list[Identifier] = Field(default_factory=list)
    disabled: list[Identifier] = Field(default_factory=list)
    enabled_li: list[Identifier] = Field(default_factory=list)
    disabled_li: list[Identifier] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_contradiction(self) -> VendorsIn:
        for yes, no in (("enabled", "disabled"), ("enabled_li", "disabled_li")):
            both = set(getattr(self, yes)) & set(getattr(self, no))
            if both:
                raise ValueError(f"vendors {sorted(both)} are both in {yes} and in {no}")
        return self


class ConsentsIn(Strict):
    purposes: list[PurposeIn] = Field(default_factory=list, max_length=1000)
    vendors: VendorsIn = Field(default_factory=VendorsIn)
    channels: list[ChannelIn] = Field(default_factory=list, max_length=1000)
    tcfcs: Annotated[str, StringConstraints(max_length=65536)] | None = None

    @model_validator(mode="after")
    def _ids_once(self) -> ConsentsIn:
        _unique_ids(self.purposes, "purpose")
        _unique_ids(self.channels, "channel")
        return self


class EventUserIn(Strict):
    id: Identifier | None = None
    organization_user_id: OrganizationUserId | None = None
    metadata: Metadata = Field(default_factory=dict)
    country: Country | None = None
    last_seen_country: Country | None = None

    @model_validator(mode="after")
    def _identified(self) -> EventUserIn:
        if self.id is None and self.organization_user_id is None:
            raise ValueError("user.id or user.organization_user_id is required")
        return self


class DelegateIn(Strict):
    id: Identifier
    name: ShortText | None = None
    metadata: Metadata = Field(default_factory=dict)


EventStatus = Literal["confirmed", "pending_approval"]


class EventIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "user": {"organization_user_id": "jane@example.com", "country": "FR"},
                    "consents": {
                        "purposes": [{"id": "marketing", "enabled": True}],
                        "vendors": {"enabled": ["google"]},
                        "channels": [{"id": "email", "enabled": True}],
                    },
                },
                {
                    "status": "pending_approval",
                    "user": {"organization_user_id": "jane@example.com"},
                    "consents": {"channels": [{"id": "newsletter", "enabled": True}]},
                    "metadata": {"source": "double-opt-in"},
                },
            ]
        },
    )

    id: Identifier | None = None
    status: EventStatus = "confirmed"
    regulation: Regulation = "gdpr"
    metadata: Metadata = Field(default_factory=dict)
    user: EventUserIn
    consents: ConsentsIn = Field(default_factory=ConsentsIn)
    proofs_id: list[Identifier] = Field(default_factory=list, max_length=100)
    delegate: DelegateIn | None = None
    created_at: Timestamp = None


class EventPatch(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "confirmed"}]}
    )

    status: EventStatus | None = None
    consents: ConsentsIn | None = None
    metadata: Metadata | None = None
    delegate: DelegateIn | None = None


class UserIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"organization_user_id": "jane@example.com", "metadata": {"tier": "gold"}}]
        },
    )

    id: Identifier | None = None
    organization_user_id: OrganizationUserId | None = None
    metadata: Metadata = Field(default_factory=dict)
    country: Country | None = None
    last_seen_country: Country | None = None


class UserPatch(Strict):
    organization_user_id: OrganizationUserId | None = None
    metadata: Metadata | None = None
    country: Country | None = None
    last_seen_country: Country | None = None


# -- webhooks -------------------------------------------------------------------------------

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
RESERVED_HEADERS = frozenset(
    {
        "host", "content-type", "content-length", "user-agent", "authorization",
        "webhook-id", "webhook-timestamp", "webhook-signature", "transfer-encoding",
        "connection", "te", "upgrade", "proxy-authorization", "cookie",
    }
)  # fmt: skip


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    if len(headers) > 50:
        raise ValueError("at most 50 headers")
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"header {name!r} is set by Consent Relay and cannot be configured")
        if "\r" in value or "\n" in value or "\x00" in value or len(value) > 4096:
            raise ValueError(f"header {name!r} has an invalid value")
    return headers


Headers = Annotated[dict[str, str], AfterValidator(_check_headers)]


def _known_types(values: list[str]) -> list[str]:
    for value in values:
        if value not in EVENT_TYPES:
            raise ValueError(f"unknown event type {value!r}; known: {', '.join(EVENT_TYPES)}")
    return list(dict.fromkeys(values))


EventTypes = Annotated[list[str], AfterValidator(_known_types)]
WebhookUrl = Annotated[HttpUrl, Field(description="http(s) URL of the receiver")]


class OAuthIn(Strict):
    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: HttpUrl
    client_id: Annotated[
        str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_no_nul)
    ]
    client_secret: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    scope: ShortText | None = None
    audience: ShortText | None = None
    client_auth_method: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"
    token_request_headers: Headers = Field(default_factory=dict)


class WebhookIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/consents",
                    "event_types": ["user.updated"],
                    "flatten": True,
                    "headers": {"X-Env": "prod"},
                    "authentication": {
                        "type": "oauth2_client_credentials",
                        "token_url": "https://auth.example.com/oauth/token",
                        "client_id": "consent-relay",
                        "client_secret": "s3cret",
                        "scope": "consents:write",
                    },
                }
            ]
        },
    )

    url: WebhookUrl
    enabled: bool = True
    event_types: EventTypes = Field(default_factory=list)
    regulations: list[Regulation] = Field(default_factory=lambda: ["gdpr"], min_length=1)
    flatten: bool = False
    headers: Headers = Field(default_factory=dict)
    authentication: OAuthIn | None = None
    description: ShortText = ""


class WebhookPatch(Strict):
    url: WebhookUrl | None = None
    enabled: bool | None = None
    event_types: EventTypes | None = None
    regulations: Annotated[list[Regulation], Field(min_length=1)] | None = None
    flatten: bool | None = None
    headers: Headers | None = None
    authentication: OAuthIn | None = None
    description: ShortText | None = None


class OrganizationIn(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"id": "acme", "name": "Acme"}]}
    )

    id: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    ]
    name: ShortText = ""
