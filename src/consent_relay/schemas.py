"""Input shapes, validated with pydantic: what the API, the CLI and the dashboard accept.

Unknown fields are refused everywhere (``extra="forbid"``), so a typo is a 422 naming the
field, not a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from consent_relay import header_rules
from consent_relay.domain.rules import EVENT_TYPES
from consent_relay.header_rules import check_authorization_header as check_authorization_header
from consent_relay.input_text import printable
from consent_relay.schema_base import (
    ID_PATTERN,
    field_error,
    keys_as_property_names,
    no_nul,
    storable_metadata,
    utc,
)

# Re-exported: the input models' public names live in this module.
from consent_relay.schema_base import MAX_FUTURE_SKEW as MAX_FUTURE_SKEW
from consent_relay.schema_base import NO_NUL as NO_NUL
from consent_relay.schema_base import Strict as Strict
from consent_relay.schema_base import check_not_future as check_not_future

REGULATIONS = (
    "gdpr", "ccpa", "cpra", "cpa", "ctdpa", "vcdpa", "ucpa", "lgpd", "pipeda", "pipl",
    "appi", "pdpa", "popia", "kvkk", "fadp", "dpdpa", "tdpsa", "ocpa", "mcdpa", "none",
)  # fmt: skip

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=ID_PATTERN)]


ShortText = Annotated[
    str, StringConstraints(max_length=1024, pattern=NO_NUL), AfterValidator(no_nul)
]
Metadata = Annotated[dict[str, Any], AfterValidator(storable_metadata)]
Country = Annotated[
    str, StringConstraints(min_length=2, max_length=8, pattern=NO_NUL), AfterValidator(no_nul)
]
OrganizationUserId = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=NO_NUL), AfterValidator(no_nul)
]
Timestamp = Annotated[datetime | None, AfterValidator(utc)]


def _known_regulation(value: str) -> str:
    if value not in REGULATIONS:
        known = ", ".join(REGULATIONS)
        raise ValueError(f"unknown regulation {printable(repr(value))}; known: {known}")
    return value


Regulation = Annotated[
    str,
    AfterValidator(_known_regulation),
    WithJsonSchema({"type": "string", "enum": list(REGULATIONS)}),
]


def _unique_ids(items: list[Any], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"{what} id {item.id!r} is listed twice")
        seen.add(item.id)


class PreferenceValue(Strict):
    value: Annotated[str, StringConstraints(max_length=65536, pattern=NO_NUL)] | None = None


class PurposeIn(Strict):
    id: Identifier
    enabled: bool | None = None
    enabled_li: bool | None = None
    metadata: Metadata = Field(default_factory=dict)
    values: dict[Identifier, PreferenceValue] = Field(
        default_factory=dict, json_schema_extra=keys_as_property_names
    )


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
    tcfcs: Annotated[str, StringConstraints(max_length=65536, pattern=NO_NUL)] | None = None

    @model_validator(mode="after")
    def _ids_once(self) -> ConsentsIn:
        _unique_ids(self.purposes, "purpose")
        _unique_ids(self.channels, "channel")
        return self


class EventUserIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["id"], "properties": {"id": {"type": "string"}}},
                {
                    "required": ["organization_user_id"],
                    "properties": {"organization_user_id": {"type": "string"}},
                },
            ]
        },
    )

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

    @field_validator("created_at")
    @classmethod
    def _not_future(cls, value: datetime | None) -> datetime | None:
        if value is not None:
            check_not_future(value, datetime.now(UTC))
        return value


class EventPatch(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"status": "confirmed"}]}
    )
    NOT_NULL = ("consents", "metadata")

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


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    """The rules of ``header_rules`` (Authorization is checked with the OAuth settings)."""
    problems = header_rules.header_problems(headers)
    if problems:
        raise ValueError("; ".join(problems))
    return headers


HEADERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": header_rules.MAX_HEADERS,
    "propertyNames": {
        "pattern": header_rules.TOKEN_PATTERN,
        "maxLength": header_rules.MAX_HEADER_BYTES,
    },
    "additionalProperties": {
        "type": "string",
        "pattern": header_rules.VALUE_PATTERN,
        "maxLength": header_rules.MAX_HEADER_BYTES,
    },
    "description": (
        "Custom headers sent with every request. Names are RFC 9110 tokens; values are "
        "visible ASCII and spaces; at most "
        f"{header_rules.MAX_HEADERS} headers and {header_rules.MAX_HEADER_BYTES} bytes in all "
        "(names plus values). Refused: hop-by-hop headers (Connection, Keep-Alive, TE, "
        "Trailer, Transfer-Encoding, Upgrade, Proxy-*), framing (Content-Length, "
        "Content-Encoding, Content-Type, Content-Range), Host, Expect, User-Agent, Cookie, "
        "webhook-*, and Authorization when OAuth authentication is set."
    ),
}
Headers = Annotated[dict[str, str], AfterValidator(_check_headers), WithJsonSchema(HEADERS_SCHEMA)]


def _known_types(values: list[str]) -> list[str]:
    for value in values:
        if value not in EVENT_TYPES:
            known = ", ".join(EVENT_TYPES)
            raise ValueError(f"unknown event type {printable(repr(value))}; known: {known}")
    return list(dict.fromkeys(values))


EventTypes = Annotated[
    list[str],
    AfterValidator(_known_types),
    WithJsonSchema({"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}}),
]
WebhookUrl = Annotated[HttpUrl, Field(description="http(s) URL of the receiver")]


def _authorization_with_oauth(
    model: type[BaseModel], headers: Mapping[str, str] | None, has_oauth: bool
) -> None:
    try:
        check_authorization_header(headers or {}, has_oauth)
    except ValueError as exc:
        field_error(model, ("headers",), str(exc))


class OAuthIn(Strict):
    type: Literal["oauth2_client_credentials"] = "oauth2_client_credentials"
    token_url: HttpUrl
    client_id: Annotated[
        str,
        StringConstraints(min_length=1, max_length=1024, pattern=NO_NUL),
        AfterValidator(no_nul),
    ]
    client_secret: (
        Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=NO_NUL)] | None
    ) = None
    scope: ShortText | None = None
    audience: ShortText | None = None
    client_auth_method: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"
    token_request_headers: Headers = Field(default_factory=dict)

    @model_validator(mode="after")
    def _token_authorization(self) -> OAuthIn:
        """With client_secret_basic the client's credentials go in Authorization."""
        basic = self.client_auth_method == "client_secret_basic"
        try:
            check_authorization_header(self.token_request_headers, basic)
        except ValueError:
            field_error(
                OAuthIn,
                ("token_request_headers",),
                "header 'Authorization' cannot be configured with client_secret_basic "
                "(the client credentials are sent in it)",
            )
        return self


# Requests per second a webhook's receiver takes from us, all workers together (e.g. 10 for
# "100 requests per 10 s"); null = no limit.
RateLimit = Annotated[
    float,
    Field(gt=0, le=100_000, allow_inf_nan=False, description="requests per second at most"),
]


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
    rate_limit: RateLimit | None = None
    auto_replay: bool = True

    @model_validator(mode="after")
    def _authorization(self) -> WebhookIn:
        _authorization_with_oauth(WebhookIn, self.headers, self.authentication is not None)
        return self


class WebhookPatch(Strict):
    """Fields left out keep their value. A PATCH giving only one of ``headers`` and
    ``authentication`` is checked against the stored other one by the service
    (``check_authorization_header``)."""

    NOT_NULL = (
        "url", "enabled", "event_types", "regulations", "flatten", "headers", "auto_replay"
    )  # fmt: skip

    url: WebhookUrl | None = None
    enabled: bool | None = None
    event_types: EventTypes | None = None
    regulations: Annotated[list[Regulation], Field(min_length=1)] | None = None
    flatten: bool | None = None
    headers: Headers | None = None
    authentication: OAuthIn | None = None
    description: ShortText | None = None
    rate_limit: RateLimit | None = None  # null removes the limit
    auto_replay: bool | None = None

    @model_validator(mode="after")
    def _authorization(self) -> WebhookPatch:
        _authorization_with_oauth(WebhookPatch, self.headers, self.authentication is not None)
        return self


class OrganizationIn(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"id": "acme", "name": "Acme"}]}
    )

    id: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    ]
    name: ShortText = ""
