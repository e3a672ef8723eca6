"""Input shapes, validated with pydantic: what the API, the CLI and the dashboard accept.

Unknown fields are refused everywhere (``extra="forbid"``), so a typo is a 422 naming the
field, not a silently ignored setting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    HttpUrl,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from consent_relay import header_rules
from consent_relay.domain.rules import EVENT_TYPES
from consent_relay.header_rules import check_authorization_header as check_authorization_header
from consent_relay.input_text import find_unstorable, printable

REGULATIONS = (
    "gdpr", "ccpa", "cpra", "cpa", "ctdpa", "vcdpa", "ucpa", "lgpd", "pipeda", "pipl",
    "appi", "pdpa", "popia", "kvkk", "fadp", "dpdpa", "tdpsa", "ocpa", "mcdpa", "none",
)  # fmt: skip

MAX_JSON_DEPTH = 64  # metadata nesting; orjson refuses documents deeper than 255 levels
MAX_FUTURE_SKEW = timedelta(minutes=5)  # how far ahead of our clock a created_at may be
NO_NUL = r"^[^\x00]*$"  # stated in the OpenAPI schema; the Strict walk refuses NUL first


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


# No whitespace (spelled out: \s differs between Python, Rust and ECMA regexes, and the
# OpenAPI schema must refuse exactly what the API does), no /, ?, # or NUL.
ID_PATTERN = (
    r"^[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff/?#\x00]+$"
)
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=ID_PATTERN)]


def _keys_as_property_names(schema: dict[str, Any]) -> None:
    """pydantic states constrained keys as ``patternProperties``, which in JSON Schema lets
    any other key through; say ``propertyNames`` instead, as the API refuses other keys."""
    patterns = schema.pop("patternProperties", None)
    if patterns:
        [(pattern, value)] = patterns.items()
        schema.setdefault("propertyNames", {})["pattern"] = pattern
        schema["additionalProperties"] = value


ShortText = Annotated[
    str, StringConstraints(max_length=1024, pattern=NO_NUL), AfterValidator(_no_nul)
]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
Country = Annotated[
    str, StringConstraints(min_length=2, max_length=8, pattern=NO_NUL), AfterValidator(_no_nul)
]
OrganizationUserId = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=NO_NUL), AfterValidator(_no_nul)
]
Timestamp = Annotated[datetime | None, AfterValidator(_utc)]


def check_not_future(value: datetime, now: datetime, skew: timedelta = MAX_FUTURE_SKEW) -> None:
    """Refuse a time more than ``skew`` after ``now`` (exactly ``skew`` is fine). An event
    dated years ahead would sort after every later withdrawal and freeze the user's consent;
    a few minutes allow for the sender's clock running ahead of ours. Raises ValueError."""
    if value > now + skew:
        minutes = int(skew.total_seconds() // 60)
        raise ValueError(f"must not be more than {minutes} minutes in the future")


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


def field_error(model: type[BaseModel], where: tuple[int | str, ...], message: str) -> None:
    """Raise a validation error about the field at ``where`` (relative to ``model``), so that
    a rule checked across fields still names the one at fault."""
    raise ValidationError.from_exception_data(
        model.__name__,
        [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=where, input=None)],
    )


class Strict(BaseModel):
    """Every input model: unknown fields refused; no string anywhere in the input (keys
    included) may hold NUL or a lone surrogate (see ``input_text``); each error names the
    field. ``FREE_JSON`` fields (metadata) are free-form JSON with their own check;
    ``NOT_NULL`` fields may be left out but not set to null (the schema says so too)."""

    model_config = ConfigDict(extra="forbid")
    FREE_JSON: ClassVar[frozenset[str]] = frozenset({"metadata"})
    NOT_NULL: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _storable_strings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            found = list(find_unstorable(data, skip=cls.FREE_JSON))
            if found:
                raise ValidationError.from_exception_data(
                    cls.__name__,
                    [
                        InitErrorDetails(
                            type=PydanticCustomError("string_unstorable", message),
                            loc=where,
                            input=None,
                        )
                        for where, message in found
                    ],
                )
            for name in cls.NOT_NULL:
                if name in data and data[name] is None:
                    field_error(cls, (name,), "cannot be null (leave it out to keep it)")
        return data

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        document = handler(schema)
        target = handler.resolve_ref_schema(document)
        properties = target.get("properties", {})
        for name in cls.NOT_NULL:
            field = properties.get(name, {})
            kept = [c for c in field.get("anyOf", [field]) if c.get("type") != "null"]
            extra = {k: v for k, v in field.items() if k not in ("anyOf", "default")}
            if "anyOf" in field:
                extra |= kept[0] if len(kept) == 1 else {"anyOf": kept}
            properties[name] = extra
        return document


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
        default_factory=dict, json_schema_extra=_keys_as_property_names
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
        AfterValidator(_no_nul),
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

    @model_validator(mode="after")
    def _authorization(self) -> WebhookIn:
        _authorization_with_oauth(WebhookIn, self.headers, self.authentication is not None)
        return self


class WebhookPatch(Strict):
    """Fields left out keep their value. A PATCH giving only one of ``headers`` and
    ``authentication`` is checked against the stored other one by the service
    (``check_authorization_header``)."""

    NOT_NULL = ("url", "enabled", "event_types", "regulations", "flatten", "headers")

    url: WebhookUrl | None = None
    enabled: bool | None = None
    event_types: EventTypes | None = None
    regulations: Annotated[list[Regulation], Field(min_length=1)] | None = None
    flatten: bool | None = None
    headers: Headers | None = None
    authentication: OAuthIn | None = None
    description: ShortText | None = None

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
