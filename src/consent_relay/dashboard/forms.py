"""The webhook form: HTML form fields to ``WebhookIn`` / ``WebhookPatch`` and back, with
every validation error attached to the field it is about."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from consent_relay import errors
from consent_relay.input_text import unstorable_reason
from consent_relay.schemas import WebhookIn, WebhookPatch

AUTH_METHODS = ("client_secret_post", "client_secret_basic")
BLANK_HEADER_ROWS = 2  # empty name/value rows offered below the configured ones


@dataclass
class WebhookForm:
    """What the form shows: the values (the client secret is never sent back to the
    browser) and the errors by field name (``url``, ``headers``,
    ``authentication.token_url``...; ``""`` for errors about no one field)."""

    url: str = ""
    description: str = ""
    enabled: bool = True
    flatten: bool = False
    rate_limit: str = ""  # requests per second, as typed; blank = no limit
    auto_replay: bool = True
    event_types: list[str] = field(default_factory=list)
    regulations: list[str] = field(default_factory=lambda: ["gdpr"])
    headers: list[tuple[str, str]] = field(default_factory=list)
    oauth: bool = False
    token_url: str = ""
    client_id: str = ""
    client_secret_set: bool = False  # a stored secret exists (editing): blank keeps it
    client_secret_given: bool = False  # typed in this submission (must be typed again)
    scope: str = ""
    audience: str = ""
    client_auth_method: str = "client_secret_post"
    token_headers: list[tuple[str, str]] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add_error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def header_rows(self) -> list[tuple[str, str]]:
        return [*self.headers, *[("", "")] * BLANK_HEADER_ROWS]

    def token_header_rows(self) -> list[tuple[str, str]]:
        return [*self.token_headers, *[("", "")] * BLANK_HEADER_ROWS]

    @classmethod
    def from_webhook(cls, hook: Mapping[str, Any]) -> WebhookForm:
        auth = hook.get("authentication") or {}
        return cls(
            url=hook["url"],
            description=hook.get("description") or "",
            enabled=bool(hook["enabled"]),
            flatten=bool(hook["flatten"]),
            rate_limit="" if hook.get("rate_limit") is None else f"{hook['rate_limit']:g}",
            auto_replay=bool(hook.get("auto_replay", True)),
            event_types=list(hook["event_types"]),
            regulations=list(hook["regulations"]),
            headers=list(hook["headers"].items()),
            oauth=bool(auth),
            token_url=auth.get("token_url") or "",
            client_id=auth.get("client_id") or "",
            client_secret_set=bool(auth.get("client_secret_set")),
            scope=auth.get("scope") or "",
            audience=auth.get("audience") or "",
            client_auth_method=auth.get("client_auth_method") or "client_secret_post",
            token_headers=list((auth.get("token_request_headers") or {}).items()),
        )


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _texts(form: FormData, name: str) -> list[str]:
    return [value for value in form.getlist(name) if isinstance(value, str)]


def _pairs(form: FormData, prefix: str) -> list[tuple[str, str]]:
    names, values = _texts(form, f"{prefix}_name"), _texts(form, f"{prefix}_value")
    values += [""] * (len(names) - len(values))
    return [
        (name.strip(), value.strip())
        for name, value in zip(names, values, strict=False)
        if name.strip() or value.strip()
    ]


def _header_dict(
    pairs: Sequence[tuple[str, str]], target: WebhookForm, field_name: str
) -> dict[str, str]:
    headers: dict[str, str] = {}
    seen: set[str] = set()
    for row, (name, value) in enumerate(pairs, start=1):
        if not name:
            target.add_error(field_name, f"row {row} has a value but no header name")
            continue
        if name.lower() in seen:
            target.add_error(field_name, f"header {name!r} is listed twice")
            continue
        seen.add(name.lower())
        headers[name] = value
    return headers


def parse(form: FormData, *, editing: bool, client_secret_set: bool = False) -> WebhookForm:
    """The submitted values (errors of shape only; the model checks the rest)."""
    parsed = WebhookForm(
        url=_text(form, "url"),
        description=_text(form, "description"),
        enabled=form.get("enabled") is not None,
        flatten=form.get("flatten") is not None,
        rate_limit=_text(form, "rate_limit"),
        auto_replay=form.get("auto_replay") is not None,
        event_types=_texts(form, "event_types"),
        regulations=_texts(form, "regulations"),
        headers=_pairs(form, "header"),
        oauth=form.get("oauth") is not None,
        token_url=_text(form, "token_url"),
        client_id=_text(form, "client_id"),
        client_secret_set=editing and client_secret_set,
        client_secret_given=bool(_text(form, "client_secret")),
        scope=_text(form, "scope"),
        audience=_text(form, "audience"),
        client_auth_method=_text(form, "client_auth_method") or "client_secret_post",
        token_headers=_pairs(form, "token_header"),
    )
    return parsed


def _payload(form: FormData, parsed: WebhookForm) -> dict[str, Any]:
    headers = _header_dict(parsed.headers, parsed, "headers")
    regulations = parsed.regulations
    if not regulations:
        parsed.add_error("regulations", "choose at least one regulation")
        regulations = ["gdpr"]  # so the other fields are still checked
    authentication: dict[str, Any] | None = None
    if parsed.oauth:
        secret = form.get("client_secret")
        authentication = {
            "type": "oauth2_client_credentials",
            "token_url": parsed.token_url,
            "client_id": parsed.client_id,
            "client_secret": secret if isinstance(secret, str) and secret else None,
            "scope": parsed.scope or None,
            "audience": parsed.audience or None,
            "client_auth_method": parsed.client_auth_method,
            "token_request_headers": _header_dict(
                parsed.token_headers, parsed, "authentication.token_request_headers"
            ),
        }
    rate_limit: float | None = None
    if parsed.rate_limit:
        try:
            rate_limit = float(parsed.rate_limit)
        except ValueError:
            parsed.add_error("rate_limit", "a number of requests per second, or blank for none")
    return {
        "url": parsed.url,
        "description": parsed.description,
        "enabled": parsed.enabled,
        "flatten": parsed.flatten,
        "rate_limit": rate_limit,
        "auto_replay": parsed.auto_replay,
        "event_types": parsed.event_types,
        "regulations": regulations,
        "headers": headers,
        "authentication": authentication,
    }


def field_name(loc: Iterable[int | str]) -> str:
    """A pydantic error location as a form field: ``("authentication", "token_url")`` ->
    ``authentication.token_url``, ``("regulations", 0)`` -> ``regulations``."""
    parts = [str(part) for part in loc if isinstance(part, str)]
    parts = [part for part in parts if not part.startswith(("function-", "url["))]
    if not parts:
        return ""
    if parts[0] == "authentication" and len(parts) > 1:
        return f"authentication.{parts[1]}"
    return parts[0]


def _message(error: Any) -> str:
    message = str(error.get("msg", "is invalid"))
    return message.removeprefix("Value error, ")


def add_validation_errors(parsed: WebhookForm, exc: ValidationError) -> None:
    for error in exc.errors():
        parsed.add_error(field_name(error.get("loc", ())), _message(error))


def add_service_errors(parsed: WebhookForm, exc: errors.ConsentRelayError) -> None:
    """A refusal from the service (SSRF guard, missing client secret...), by field."""
    if not exc.errors:
        parsed.add_error("", exc.detail)
    for item in exc.errors:
        parsed.add_error(field_name(item.field.split(".")), item.message)


def to_create(form: FormData, parsed: WebhookForm) -> WebhookIn | None:
    """``WebhookIn`` from the form, or None with the errors in ``parsed.errors``."""
    payload = _payload(form, parsed)
    try:
        model = WebhookIn.model_validate(payload)
    except ValidationError as exc:
        add_validation_errors(parsed, exc)
        return None
    return None if parsed.errors else model


def to_patch(form: FormData, parsed: WebhookForm) -> WebhookPatch | None:
    """A ``WebhookPatch`` setting every field (the form shows them all; OAuth unticked
    removes the authentication), or None with the errors in ``parsed.errors``."""
    payload = _payload(form, parsed)
    try:
        model = WebhookPatch.model_validate(payload)
    except ValidationError as exc:
        add_validation_errors(parsed, exc)
        return None
    return None if parsed.errors else model


def replay_ids(form: FormData) -> list[str] | None:
    """The dead letter the replay form names (``delivery_id``), or None for all of them.
    An id that cannot be stored (NUL, lone surrogate) is a 422 naming the field, not a
    database error."""
    one = form.get("delivery_id")
    if not isinstance(one, str) or not one:
        return None
    reason = unstorable_reason(one)
    if reason is not None:
        raise errors.Unprocessable(
            f"delivery_id {reason}", [errors.FieldError("delivery_id", reason)]
        )
    return [one]
