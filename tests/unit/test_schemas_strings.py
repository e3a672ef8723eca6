"""Every string of every input model: NUL and lone surrogates refused with the field's path;
``created_at`` no more than five minutes ahead. Table-driven, on the models directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from consent_relay.api.deliveries import ReplayIn
from consent_relay.api.problems import field_path
from consent_relay.input_text import find_unstorable, printable, unstorable_reason
from consent_relay.schemas import (
    MAX_FUTURE_SKEW,
    EventIn,
    EventPatch,
    OrganizationIn,
    UserIn,
    UserPatch,
    WebhookIn,
    WebhookPatch,
    check_not_future,
)

LONE = "\ud800"
USER = {"id": "u1"}
URL = "https://hooks.example.com/h"
OAUTH = {"token_url": "https://auth.example.com/t", "client_id": "c", "client_secret": "s"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("fine", None),
        ("", None),
        ("caf\u00e9 \U0001f600", None),  # astral characters are fine (a surrogate *pair* in JSON)
        ("a\x00b", "NUL"),
        (LONE, "surrogate"),
        ("x\udfff", "surrogate"),
    ],
)
def test_unstorable_reason(value: str, reason: str | None) -> None:
    found = unstorable_reason(value)
    assert (found is None) if reason is None else (found is not None and reason in found)


def test_find_unstorable_names_paths_and_skips_free_json() -> None:
    data = {
        "a": ["ok", "b\x00"],
        "metadata": {"k": "\x00"},
        "c": {"metadata": LONE, "d": LONE},
        LONE: 1,
    }
    found = [where for where, _ in find_unstorable(data, skip=frozenset({"metadata"}))]
    assert found == [("a", 1), ("c", "d"), ("\\ud800",)]


def test_printable_escapes_lone_surrogates_only() -> None:
    assert printable("caf\u00e9") == "caf\u00e9"
    assert printable("a\ud800b") == "a\\ud800b"
    orjson.dumps(printable(LONE))


EVENT_CASES: list[tuple[dict[str, Any], tuple[int | str, ...]]] = [
    ({"user": {"id": LONE}}, ("user", "id")),
    ({"user": {"organization_user_id": "a\x00"}}, ("user", "organization_user_id")),
    ({"user": USER, "id": LONE}, ("id",)),
    ({"user": USER, "regulation": LONE}, ("regulation",)),
    ({"user": USER, "status": "\x00"}, ("status",)),
    ({"user": {**USER, "country": LONE}}, ("user", "country")),
    ({"user": USER, "consents": {"purposes": [{"id": LONE}]}}, ("consents", "purposes", 0, "id")),
    (
        {"user": USER, "consents": {"purposes": [{"id": "p", "values": {"x": {"value": LONE}}}]}},
        ("consents", "purposes", 0, "values", "x", "value"),
    ),
    (
        {"user": USER, "consents": {"purposes": [{"id": "p", "values": {LONE: {}}}]}},
        ("consents", "purposes", 0, "values", "\\ud800"),
    ),
    (
        {
            "user": USER,
            "consents": {"purposes": [{"id": "p", "values": {"metadata": {"value": "\x00"}}}]},
        },
        ("consents", "purposes", 0, "values", "metadata", "value"),
    ),
    (
        {"user": USER, "consents": {"vendors": {"enabled": ["v", LONE]}}},
        ("consents", "vendors", "enabled", 1),
    ),
    ({"user": USER, "consents": {"channels": [{"id": "\x00"}]}}, ("consents", "channels", 0, "id")),
    ({"user": USER, "consents": {"tcfcs": LONE}}, ("consents", "tcfcs")),
    ({"user": USER, "proofs_id": [LONE]}, ("proofs_id", 0)),
    ({"user": USER, "delegate": {"id": "d", "name": LONE}}, ("delegate", "name")),
    ({"user": USER, "created_at": LONE}, ("created_at",)),
    ({"user": USER, "unknown\x00": 1}, ("unknown\x00",)),
]


@pytest.mark.parametrize(("payload", "where"), EVENT_CASES)
def test_event_strings_are_checked_everywhere(
    payload: dict[str, Any], where: tuple[int | str, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate(payload)
    locs = [error["loc"] for error in caught.value.errors()]
    assert locs == [where]
    orjson.dumps(field_path(locs[0]))  # the path can always be sent back


@pytest.mark.parametrize(
    ("model", "payload", "where"),
    [
        (EventPatch, {"consents": {"channels": [{"id": LONE}]}}, ("consents", "channels", 0, "id")),
        (EventPatch, {"delegate": {"id": "\x00"}}, ("delegate", "id")),
        (UserIn, {"organization_user_id": LONE}, ("organization_user_id",)),
        (UserPatch, {"last_seen_country": "F\x00"}, ("last_seen_country",)),
        (WebhookIn, {"url": URL, "description": LONE}, ("description",)),
        (WebhookIn, {"url": URL, "headers": {"X-A": LONE}}, ("headers", "X-A")),
        (WebhookIn, {"url": URL + LONE}, ("url",)),
        (WebhookIn, {"url": URL, "event_types": [LONE]}, ("event_types", 0)),
        (
            WebhookIn,
            {"url": URL, "authentication": {**OAUTH, "client_secret": LONE}},
            ("authentication", "client_secret"),
        ),
        (
            WebhookIn,
            {"url": URL, "authentication": {**OAUTH, "token_request_headers": {"X": "\x00"}}},
            ("authentication", "token_request_headers", "X"),
        ),
        (WebhookPatch, {"description": "\x00"}, ("description",)),
        (OrganizationIn, {"id": "acme", "name": LONE}, ("name",)),
        (ReplayIn, {"delivery_ids": ["dlv_1", LONE]}, ("delivery_ids", 1)),
        (ReplayIn, {"delivery_ids": ["dlv\x00"]}, ("delivery_ids", 0)),
        (ReplayIn, {"since": LONE}, ("since",)),
    ],
)
def test_every_model_checks_its_strings(
    model: type[BaseModel], payload: dict[str, Any], where: tuple[int | str, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    assert [error["loc"] for error in caught.value.errors()] == [where]


def test_metadata_keeps_nul_but_not_lone_surrogates() -> None:
    """Metadata is free-form JSON stored as text: NUL is kept (an existing promise), a lone
    surrogate is refused by its own check, naming the metadata field."""
    event = EventIn.model_validate({"user": {**USER, "metadata": {"k": "\x00"}}})
    assert event.user.metadata == {"k": "\x00"}
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate({"user": USER, "metadata": {"k": LONE}})
    assert [error["loc"][0] for error in caught.value.errors()] == ["metadata"]


@pytest.mark.parametrize(
    ("model", "payload", "field"),
    [
        (EventPatch, {"consents": None}, "consents"),
        (EventPatch, {"metadata": None}, "metadata"),
        (WebhookPatch, {"url": None}, "url"),
        (WebhookPatch, {"headers": None}, "headers"),
    ],
)
def test_not_null_fields(model: type[BaseModel], payload: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]
    properties = model.model_json_schema()["properties"]
    assert "null" not in orjson.dumps(properties[field]).decode()


NOW = datetime(2026, 5, 14, 9, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        (NOW - timedelta(days=3650), False),
        (NOW, False),
        (NOW + timedelta(minutes=4, seconds=59), False),
        (NOW + MAX_FUTURE_SKEW, False),  # exactly at the bound
        (NOW + MAX_FUTURE_SKEW + timedelta(microseconds=1), True),
        (NOW + timedelta(minutes=6), True),
        (datetime(2099, 1, 1, tzinfo=UTC), True),
    ],
)
def test_check_not_future(value: datetime, refused: bool) -> None:
    if refused:
        with pytest.raises(ValueError, match="5 minutes in the future"):
            check_not_future(value, NOW)
    else:
        check_not_future(value, NOW)


@pytest.mark.parametrize(
    ("created_at", "refused"),
    [
        ("2099-01-01T00:00:00Z", True),
        (timedelta(minutes=10), True),  # from now, when validated
        (timedelta(minutes=4), False),
        ("2020-01-01T00:00:00Z", False),
    ],
)
def test_event_created_at_bound(created_at: str | timedelta, refused: bool) -> None:
    if isinstance(created_at, timedelta):
        created_at = (datetime.now(UTC) + created_at).isoformat()
    payload = {"user": USER, "created_at": created_at}
    if not refused:
        EventIn.model_validate(payload)
        return
    with pytest.raises(ValidationError) as caught:
        EventIn.model_validate(payload)
    assert [error["loc"] for error in caught.value.errors()] == [("created_at",)]
