"""Consent events through the HTTP API (docs/webhook-rules.md), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from consent_relay.runtime import Context

EVENTS = "/v1/consents/events"
USERS = "/v1/consents/users"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
EMPTY_CONSENTS: dict[str, Any] = {
    "purposes": [],
    "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []},
    "channels": [],
}


def _json(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


async def create(api: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(EVENTS, json=payload)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    return _json(response)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem+json body, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    data = _json(response)
    assert data["status"] == status
    assert data["type"].startswith("https://consent-relay.dev/problems/")
    assert data["title"]
    assert data["detail"]
    return data


def fields(response: httpx.Response, status: int = 422) -> list[str]:
    return [error["field"] for error in problem(response, status)["errors"]]


async def event_ids(api: httpx.AsyncClient, query: str = "") -> list[str]:
    response = await api.get(EVENTS + query)
    assert response.status_code == 200, response.text
    page = _json(response)
    return [event["id"] for event in page["data"]]


def is_uuid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


# -- create and get ----------------------------------------------------------------------------


async def test_create_event_didomi_shape_round_trips(api: httpx.AsyncClient) -> None:
    payload: dict[str, Any] = {
        "status": "confirmed",
        "regulation": "gdpr",
        "metadata": {"source": "web", "campaign": {"id": 7}},
        "user": {
            "organization_user_id": "jane@example.com",
            "metadata": {"plan": "pro"},
            "country": "FR",
            "last_seen_country": "FR",
        },
        "consents": {
            "purposes": [
                {
                    "id": "market_research",
                    "enabled": True,
                    "enabled_li": None,
                    "metadata": {"k": "v"},
                    "values": {"topics": {"value": "tech,travel"}},
                }
            ],
            "vendors": {
                "enabled": ["google"],
                "disabled": ["facebook"],
                "enabled_li": ["criteo"],
                "disabled_li": [],
            },
            "channels": [{"id": "email", "enabled": True}],
            "tcfcs": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
        },
        "proofs_id": ["proof-1"],
        "delegate": {"id": "agent-17", "name": "Call centre", "metadata": {"desk": 4}},
    }
    event = await create(api, payload)

    assert is_uuid(event["id"])
    assert is_uuid(event["user"]["id"])
    assert TIMESTAMP.match(event["created_at"])
    assert event["updated_at"] == event["created_at"]
    assert event == {
        "id": event["id"],
        "organization_id": "acme",
        "created_at": event["created_at"],
        "updated_at": event["created_at"],
        "status": "confirmed",
        "regulation": "gdpr",
        "metadata": {"source": "web", "campaign": {"id": 7}},
        "user": {
            "id": event["user"]["id"],
            "organization_user_id": "jane@example.com",
            "metadata": {"plan": "pro"},
            "country": "FR",
            "last_seen_country": "FR",
        },
        "consents": {
            "purposes": [
                {
                    "id": "market_research",
                    "enabled": True,
                    "enabled_li": None,
                    "metadata": {"k": "v"},
                    "values": {"topics": {"value": "tech,travel"}},
                }
            ],
            "vendors": {
                "enabled": ["google"],
                "disabled": ["facebook"],
                "enabled_li": ["criteo"],
                "disabled_li": [],
            },
            "channels": [{"id": "email", "enabled": True, "metadata": {}}],
            "tcfcs": "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA",
        },
        "proofs_id": ["proof-1"],
        "delegate": {"id": "agent-17", "name": "Call centre", "metadata": {"desk": 4}},
    }
    fetched = await api.get(f"{EVENTS}/{event['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == event


async def test_create_event_fills_defaults(api: httpx.AsyncClient) -> None:
    event = await create(api, {"user": {"organization_user_id": "jane"}})
    assert event == {
        "id": event["id"],
        "organization_id": "acme",
        "created_at": event["created_at"],
        "updated_at": event["created_at"],
        "status": "confirmed",
        "regulation": "gdpr",
        "metadata": {},
        "user": {
            "id": event["user"]["id"],
            "organization_user_id": "jane",
            "metadata": {},
            "country": None,
            "last_seen_country": None,
        },
        "consents": EMPTY_CONSENTS,
        "proofs_id": [],
        "delegate": None,
    }
    assert is_uuid(event["id"])


async def test_generated_ids_are_distinct_uuids(api: httpx.AsyncClient) -> None:
    first = await create(api, {"user": {"organization_user_id": "jane"}})
    second = await create(api, {"user": {"organization_user_id": "jane"}})
    assert first["id"] != second["id"]
    assert is_uuid(first["id"])
    assert is_uuid(second["id"])
    assert first["user"]["id"] == second["user"]["id"]


async def test_given_id_is_kept_and_an_existing_id_is_a_conflict(api: httpx.AsyncClient) -> None:
    event = await create(api, {"id": "evt-1", "user": {"organization_user_id": "jane"}})
    assert event["id"] == "evt-1"

    again = await api.post(
        EVENTS,
        json={"id": "evt-1", "user": {"organization_user_id": "john"}, "metadata": {"x": 1}},
    )
    assert fields(again, 409) == ["id"]
    assert again.json()["title"] == "Conflict"

    # Nothing of the refused request was written: not the event, not its new user.
    assert await event_ids(api) == ["evt-1"]
    assert (await api.get(f"{EVENTS}/evt-1")).json() == event
    users = await api.get(USERS, params={"organization_user_id": "john"})
    assert users.json() == {"data": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2024-03-01T10:00:00+02:00", "2024-03-01T08:00:00.000Z"),
        ("2024-03-01T08:00:00Z", "2024-03-01T08:00:00.000Z"),
        ("2024-03-01T08:00:00.123456Z", "2024-03-01T08:00:00.123Z"),
        ("2024-02-29T23:30:00-01:00", "2024-03-01T00:30:00.000Z"),
        ("2024-03-01T08:00:00", "2024-03-01T08:00:00.000Z"),
    ],
)
async def test_given_created_at_is_kept_normalized_to_utc(
    api: httpx.AsyncClient, given: str, stored: str
) -> None:
    event = await create(api, {"user": {"organization_user_id": "jane"}, "created_at": given})
    assert event["created_at"] == stored
    assert event["updated_at"] == stored
    assert (await api.get(f"{EVENTS}/{event['id']}")).json()["created_at"] == stored


@pytest.fixture
def tokyo_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is not UTC (a server in Tokyo)."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo_local_time")
async def test_naive_created_at_is_utc_whatever_the_local_time_zone(
    api: httpx.AsyncClient,
) -> None:
    event = await create(
        api, {"user": {"organization_user_id": "jane"}, "created_at": "2024-03-01T08:00:00"}
    )
    assert event["created_at"] == "2024-03-01T08:00:00.000Z"


@pytest.mark.parametrize(
    "given",
    [
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-05:00",  # after year 9999 in UTC
        "0999-12-31T00:00:00Z",  # not a four-digit year
        "not a date",
    ],
)
async def test_created_at_out_of_range_is_refused(api: httpx.AsyncClient, given: str) -> None:
    response = await api.post(
        EVENTS, json={"user": {"organization_user_id": "jane"}, "created_at": given}
    )
    assert fields(response) == ["created_at"]
    assert await event_ids(api) == []


# -- which user an event names ----------------------------------------------------------------


async def test_user_resolved_by_id_or_organization_user_id(api: httpx.AsyncClient) -> None:
    first = await create(api, {"user": {"organization_user_id": "jane"}})
    user_id = first["user"]["id"]

    by_id = await create(api, {"user": {"id": user_id}})
    assert by_id["user"] == {
        "id": user_id,
        "organization_user_id": "jane",
        "metadata": {},
        "country": None,
        "last_seen_country": None,
    }
    by_ouid = await create(api, {"user": {"organization_user_id": "jane"}})
    assert by_ouid["user"]["id"] == user_id
    by_both = await create(api, {"user": {"id": user_id, "organization_user_id": "jane"}})
    assert by_both["user"]["id"] == user_id

    users = (await api.get(USERS)).json()["data"]
    assert [user["id"] for user in users] == [user_id]
    assert await event_ids(api, f"?user_id={user_id}") == [
        first["id"],
        by_id["id"],
        by_ouid["id"],
        by_both["id"],
    ]


async def test_unknown_user_is_created_with_the_given_id(api: httpx.AsyncClient) -> None:
    event = await create(api, {"user": {"id": "user-42"}})
    assert event["user"]["id"] == "user-42"
    assert event["user"]["organization_user_id"] is None
    user = await api.get(f"{USERS}/user-42")
    assert user.status_code == 200
    assert user.json()["organization_user_id"] is None
    assert user.json()["version"] == 1


async def test_unknown_user_with_organization_user_id_gets_a_uuid(api: httpx.AsyncClient) -> None:
    event = await create(api, {"user": {"organization_user_id": "jane"}})
    assert is_uuid(event["user"]["id"])
    user = (await api.get(f"{USERS}/{event['user']['id']}")).json()
    assert user["organization_user_id"] == "jane"


async def test_both_identifiers_naming_two_users_is_a_conflict(api: httpx.AsyncClient) -> None:
    jane = (await create(api, {"user": {"organization_user_id": "jane"}}))["user"]["id"]
    await create(api, {"user": {"organization_user_id": "john"}})

    response = await api.post(EVENTS, json={"user": {"id": jane, "organization_user_id": "john"}})
    assert fields(response, 409) == ["user.id"]
    # An id that names nobody, with an organization_user_id that names someone.
    response = await api.post(
        EVENTS, json={"user": {"id": "nobody", "organization_user_id": "john"}}
    )
    assert fields(response, 409) == ["user.id"]

    assert len(await event_ids(api)) == 2
    assert (await api.get(f"{USERS}/nobody")).status_code == 404


# -- pending approval and confirmation ------------------------------------------------------


async def test_pending_event_is_stored_but_not_applied_until_confirmed(
    api: httpx.AsyncClient,
) -> None:
    pending = await create(
        api,
        {
            "status": "pending_approval",
            "user": {"organization_user_id": "jane", "metadata": {"a": 1}, "country": "FR"},
            "consents": {"purposes": [{"id": "analytics", "enabled": True}]},
        },
    )
    assert pending["status"] == "pending_approval"
    assert (await api.get(f"{EVENTS}/{pending['id']}")).json() == pending
    user_id = pending["user"]["id"]
    user = (await api.get(f"{USERS}/{user_id}")).json()
    assert user["consents"] == EMPTY_CONSENTS
    assert user["metadata"] == {}
    assert user["country"] is None
    assert user["organization_user_id"] == "jane"
    assert user["version"] == 1

    confirmed = await api.patch(f"{EVENTS}/{pending['id']}", json={"status": "confirmed"})
    assert confirmed.status_code == 200, confirmed.text
    event = confirmed.json()
    assert event["status"] == "confirmed"
    assert event["created_at"] == pending["created_at"]
    assert TIMESTAMP.match(event["updated_at"])
    assert event["updated_at"] >= pending["updated_at"]
    assert {k: v for k, v in event.items() if k not in ("status", "updated_at")} == {
        k: v for k, v in pending.items() if k not in ("status", "updated_at")
    }
    assert (await api.get(f"{EVENTS}/{pending['id']}")).json() == event

    user = (await api.get(f"{USERS}/{user_id}")).json()
    assert user["consents"]["purposes"] == [
        {"id": "analytics", "enabled": True, "enabled_li": None, "metadata": {}, "values": {}}
    ]
    assert user["metadata"] == {"a": 1}
    assert user["country"] == "FR"
    assert user["version"] == 2


async def test_confirmed_event_cannot_go_back_to_pending(api: httpx.AsyncClient) -> None:
    event = await create(api, {"user": {"organization_user_id": "jane"}})
    response = await api.patch(f"{EVENTS}/{event['id']}", json={"status": "pending_approval"})
    assert fields(response) == ["status"]
    assert (await api.get(f"{EVENTS}/{event['id']}")).json() == event

    pending = await create(api, {"status": "pending_approval", "user": {"id": "u1"}})
    await api.patch(f"{EVENTS}/{pending['id']}", json={"status": "confirmed"})
    response = await api.patch(f"{EVENTS}/{pending['id']}", json={"status": "pending_approval"})
    assert fields(response) == ["status"]
    assert (await api.get(f"{EVENTS}/{pending['id']}")).json()["status"] == "confirmed"


async def test_patch_with_nothing_new_changes_nothing(api: httpx.AsyncClient) -> None:
    pending = await create(api, {"status": "pending_approval", "user": {"id": "u1"}})
    same = await api.patch(f"{EVENTS}/{pending['id']}", json={"status": "pending_approval"})
    assert same.status_code == 200
    assert same.json() == pending
    empty = await api.patch(f"{EVENTS}/{pending['id']}", json={})
    assert empty.json() == pending


async def test_patch_consents_metadata_and_delegate(api: httpx.AsyncClient) -> None:
    event = await create(
        api,
        {
            "user": {"organization_user_id": "jane"},
            "metadata": {"a": 1},
            "consents": {"purposes": [{"id": "analytics", "enabled": True}], "tcfcs": "OLD"},
        },
    )
    response = await api.patch(
        f"{EVENTS}/{event['id']}",
        json={
            "consents": {"purposes": [{"id": "analytics", "enabled": False}]},
            "metadata": {"b": 2},
            "delegate": {"id": "agent-1"},
        },
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    # The new consents are stored in the same complete shape as on creation.
    assert patched["consents"] == {
        "purposes": [
            {"id": "analytics", "enabled": False, "enabled_li": None, "metadata": {}, "values": {}}
        ],
        "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []},
        "channels": [],
    }
    assert patched["metadata"] == {"b": 2}
    assert patched["delegate"] == {"id": "agent-1", "name": None, "metadata": {}}
    assert patched["status"] == "confirmed"
    assert patched["created_at"] == event["created_at"]
    assert (await api.get(f"{EVENTS}/{event['id']}")).json() == patched

    user = (await api.get(f"{USERS}/{event['user']['id']}")).json()
    assert user["consents"]["purposes"] == [
        {"id": "analytics", "enabled": False, "enabled_li": None, "metadata": {}, "values": {}}
    ]

    cleared = await api.patch(f"{EVENTS}/{event['id']}", json={"delegate": None})
    assert cleared.json()["delegate"] is None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"regulation": "cpra"}, "regulation"),
        ({"user": {"id": "other"}}, "user"),
        ({"created_at": "2024-01-01T00:00:00Z"}, "created_at"),
        ({"status": "deleted"}, "status"),
        ({"consents": None}, "consents"),
        ({"metadata": None}, "metadata"),
        ({"consents": {"purposes": [{"enabled": True}]}}, "consents.purposes[0].id"),
        ({"delegate": {"name": "x"}}, "delegate.id"),
    ],
)
async def test_patch_refuses_what_it_cannot_change(
    api: httpx.AsyncClient, patch: dict[str, Any], field: str
) -> None:
    event = await create(api, {"user": {"organization_user_id": "jane"}})
    response = await api.patch(f"{EVENTS}/{event['id']}", json=patch)
    assert fields(response) == [field]
    assert (await api.get(f"{EVENTS}/{event['id']}")).json() == event


async def test_unknown_event_is_404(api: httpx.AsyncClient) -> None:
    for response in (
        await api.get(f"{EVENTS}/nope"),
        await api.patch(f"{EVENTS}/nope", json={"status": "confirmed"}),
        await api.delete(f"{EVENTS}/nope"),
    ):
        assert problem(response, 404)["title"] == "Not found"


async def test_delete_event(api: httpx.AsyncClient) -> None:
    kept = await create(api, {"user": {"organization_user_id": "jane"}})
    gone = await create(api, {"user": {"organization_user_id": "jane"}})
    response = await api.delete(f"{EVENTS}/{gone['id']}")
    assert response.status_code == 204
    assert response.content == b""
    problem(await api.get(f"{EVENTS}/{gone['id']}"), 404)
    problem(await api.delete(f"{EVENTS}/{gone['id']}"), 404)
    assert await event_ids(api) == [kept["id"]]


# -- listing ----------------------------------------------------------------------------------


async def test_list_filters(api: httpx.AsyncClient) -> None:
    j1 = await create(api, {"user": {"organization_user_id": "jane"}})
    k1 = await create(api, {"user": {"organization_user_id": "john"}})
    j2 = await create(api, {"status": "pending_approval", "user": {"organization_user_id": "jane"}})
    k2 = await create(api, {"status": "pending_approval", "user": {"organization_user_id": "john"}})
    jane, john = j1["user"]["id"], k1["user"]["id"]

    assert await event_ids(api) == [j1["id"], k1["id"], j2["id"], k2["id"]]
    assert await event_ids(api, f"?user_id={jane}") == [j1["id"], j2["id"]]
    assert await event_ids(api, "?organization_user_id=john") == [k1["id"], k2["id"]]
    assert await event_ids(api, "?status=confirmed") == [j1["id"], k1["id"]]
    assert await event_ids(api, "?status=pending_approval") == [j2["id"], k2["id"]]
    assert await event_ids(api, "?organization_user_id=jane&status=pending_approval") == [j2["id"]]
    assert await event_ids(api, f"?user_id={john}&status=confirmed") == [k1["id"]]
    assert await event_ids(api, f"?user_id={jane}&organization_user_id=jane") == [
        j1["id"],
        j2["id"],
    ]
    assert await event_ids(api, f"?user_id={john}&organization_user_id=jane") == []
    assert await event_ids(api, "?organization_user_id=nobody") == []
    assert await event_ids(api, "?user_id=nobody") == []

    listed = (await api.get(EVENTS, params={"user_id": jane})).json()
    assert listed == {"data": [j1, j2], "next_cursor": None}
    assert fields(await api.get(EVENTS, params={"status": "maybe"})) == ["status"]


async def test_cursor_pagination(api: httpx.AsyncClient) -> None:
    created = [await create(api, {"user": {"organization_user_id": f"u{i}"}}) for i in range(5)]
    ids = [event["id"] for event in created]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.get(EVENTS, params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["data"]) <= 2
        seen += [event["id"] for event in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 3

    exact = (await api.get(EVENTS, params={"limit": 5})).json()
    assert [event["id"] for event in exact["data"]] == ids
    assert exact["next_cursor"] is None
    assert len((await api.get(EVENTS, params={"limit": 1000})).json()["data"]) == 5

    # The cursor keeps the filters' order too.
    jane = await create(api, {"user": {"organization_user_id": "u1"}})
    first = (await api.get(EVENTS, params={"organization_user_id": "u1", "limit": 1})).json()
    assert [event["id"] for event in first["data"]] == [ids[1]]
    second = (
        await api.get(
            EVENTS,
            params={"organization_user_id": "u1", "limit": 1, "cursor": first["next_cursor"]},
        )
    ).json()
    assert second == {"data": [jane], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "1001"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"pk:abc").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"id:12").decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"pk:" + b"9" * 30).decode()}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "cursor"),
    ],
)
async def test_bad_limit_or_cursor_is_422(
    api: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    await create(api, {"user": {"organization_user_id": "jane"}})
    assert fields(await api.get(EVENTS, params=params)) == [field]


# -- validation -------------------------------------------------------------------------------

VALID_USER: dict[str, Any] = {"organization_user_id": "jane"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "user"),
        ({"user": {}}, "user"),
        ({"user": "jane"}, "user"),
        ({"user": {**VALID_USER, "email": "x"}}, "user.email"),
        ({"user": {"id": ""}}, "user.id"),
        ({"user": {"id": "a/b"}}, "user.id"),
        ({"user": VALID_USER, "regulation": "eprivacy"}, "regulation"),
        ({"user": VALID_USER, "status": "approved"}, "status"),
        ({"user": VALID_USER, "color": "red"}, "color"),
        ({"user": VALID_USER, "id": "has space"}, "id"),
        ({"user": VALID_USER, "metadata": []}, "metadata"),
        ({"user": VALID_USER, "consents": {"purposes": [{}]}}, "consents.purposes[0].id"),
        ({"user": VALID_USER, "consents": {"purposes": [{"id": ""}]}}, "consents.purposes[0].id"),
        (
            {
                "user": VALID_USER,
                "consents": {"purposes": [{"id": "a"}, {"id": "b", "enabled": 3}]},
            },
            "consents.purposes[1].enabled",
        ),
        (
            {"user": VALID_USER, "consents": {"purposes": [{"id": "a", "extra": 1}]}},
            "consents.purposes[0].extra",
        ),
        (
            {"user": VALID_USER, "consents": {"purposes": [{"id": "a", "values": {"t": "x"}}]}},
            "consents.purposes[0].values.t",
        ),
        ({"user": VALID_USER, "consents": {"purposes": [{"id": "a"}, {"id": "a"}]}}, "consents"),
        (
            {"user": VALID_USER, "consents": {"vendors": {"enabled": "x"}}},
            "consents.vendors.enabled",
        ),
        (
            {"user": VALID_USER, "consents": {"vendors": {"enabled": ["v"], "disabled": ["v"]}}},
            "consents.vendors",
        ),
        (
            {"user": VALID_USER, "consents": {"channels": [{"enabled": True}]}},
            "consents.channels[0].id",
        ),
        ({"user": VALID_USER, "consents": {"cookies": []}}, "consents.cookies"),
        ({"user": VALID_USER, "proofs_id": "p"}, "proofs_id"),
        ({"user": VALID_USER, "delegate": {}}, "delegate.id"),
        ({"user": VALID_USER, "created_at": "yesterday"}, "created_at"),
    ],
)
async def test_invalid_event_is_422_naming_the_field(
    api: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    response = await api.post(EVENTS, json=payload)
    data = problem(response, 422)
    assert data["title"] == "Validation failed"
    assert data["type"] == "https://consent-relay.dev/problems/validation-failed"
    assert [error["field"] for error in data["errors"]] == [field]
    assert all(error["message"] for error in data["errors"])
    assert await event_ids(api) == []


async def test_several_faults_are_all_listed(api: httpx.AsyncClient) -> None:
    response = await api.post(
        EVENTS,
        json={
            "user": VALID_USER,
            "regulation": "nope",
            "consents": {"purposes": [{"id": "a"}, {"enabled": True}]},
        },
    )
    assert sorted(fields(response)) == ["consents.purposes[1].id", "regulation"]


async def test_invalid_json_is_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        EVENTS, content=b'{"user": ', headers={"Content-Type": "application/json"}
    )
    assert problem(response, 400)["title"] == "Bad request"
    response = await api.post(EVENTS, content=b"{'user': 1}")
    problem(response, 400)
    assert await event_ids(api) == []


async def test_body_that_is_not_an_object_is_422(api: httpx.AsyncClient) -> None:
    assert fields(await api.post(EVENTS, json=[])) == ["body"]
    assert fields(await api.post(EVENTS, content=b"")) == ["body"]


async def test_form_encoded_content_type_is_read_as_json(api: httpx.AsyncClient) -> None:
    response = await api.post(
        EVENTS,
        content=b'{"user": {"organization_user_id": "jane"}}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 201, response.text


def _big_event(size: int) -> bytes:
    head = b'{"user": {"organization_user_id": "jane"}, "metadata": {"blob": "'
    tail = b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


async def test_body_over_one_mebibyte_is_413(api: httpx.AsyncClient) -> None:
    limit = 1024 * 1024
    response = await api.post(EVENTS, content=_big_event(limit + 1))
    assert problem(response, 413)["title"] == "Payload too large"
    assert await event_ids(api) == []
    accepted = await api.post(EVENTS, content=_big_event(limit))
    assert accepted.status_code == 201, accepted.text[:300]


async def test_streamed_body_over_one_mebibyte_is_413(api: httpx.AsyncClient) -> None:
    """Without Content-Length (chunked), the limit holds while the body is read."""
    payload = _big_event(1024 * 1024 + 10)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    response = await api.post(EVENTS, content=chunks())
    assert "content-length" not in response.request.headers
    assert problem(response, 413)["title"] == "Payload too large"
    assert await event_ids(api) == []

    small = b'{"user": {"organization_user_id": "jane"}}'

    async def small_chunks() -> AsyncIterator[bytes]:
        yield small[:10]
        yield small[10:]

    assert (await api.post(EVENTS, content=small_chunks())).status_code == 201


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user": {"organization_user_id": "ja\x00ne"}}, "user.organization_user_id"),
        ({"user": {"id": "u\x00"}}, "user.id"),
        ({"user": VALID_USER, "id": "e\x001"}, "id"),
        ({"user": {**VALID_USER, "country": "F\x00"}}, "user.country"),
        (
            {"user": VALID_USER, "consents": {"purposes": [{"id": "p\x00"}]}},
            "consents.purposes[0].id",
        ),
        ({"user": VALID_USER, "delegate": {"id": "a", "name": "\x00"}}, "delegate.name"),
    ],
)
async def test_nul_characters_in_stored_text_are_refused(
    api: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    """PostgreSQL text cannot hold NUL: the API refuses it up front (422, never a 500)."""
    assert fields(await api.post(EVENTS, json=payload)) == [field]


async def test_nul_characters_in_metadata_are_kept(api: httpx.AsyncClient) -> None:
    event = await create(api, {"user": VALID_USER, "metadata": {"k\x00": "v\x00"}})
    assert event["metadata"] == {"k\x00": "v\x00"}
    assert (await api.get(f"{EVENTS}/{event['id']}")).json()["metadata"] == {"k\x00": "v\x00"}


async def test_nul_characters_in_the_url_are_not_a_500(api: httpx.AsyncClient) -> None:
    await create(api, {"user": VALID_USER})
    problem(await api.get(f"{EVENTS}/a%00b"), 404)
    problem(await api.patch(f"{EVENTS}/a%00b", json={}), 404)
    problem(await api.delete(f"{EVENTS}/a%00b"), 404)
    assert fields(await api.get(EVENTS, params={"organization_user_id": "\x00"})) == [
        "organization_user_id"
    ]
    assert fields(await api.get(EVENTS, params={"user_id": "a\x00"})) == ["user_id"]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"user": {"id": "u"}, "metadata": {"n": 100000000000000000000000000000}}', "metadata"),
        (b'{"user": {"id": "u"}, "metadata": {"n": NaN}}', "metadata"),
        (b'{"user": {"id": "u"}, "metadata": {"n": [Infinity]}}', "metadata"),
        (b'{"user": {"id": "u"}, "metadata": {"s": "\\ud800"}}', "metadata"),
        (b'{"user": {"id": "u", "metadata": {"s": "\\udfff"}}}', "user.metadata"),
        (
            b'{"user": {"id": "u"}, "delegate": {"id": "d", "metadata": {"x": NaN}}}',
            "delegate.metadata",
        ),
    ],
)
async def test_metadata_that_cannot_be_stored_as_json_is_refused(
    api: httpx.AsyncClient, raw: bytes, field: str
) -> None:
    assert fields(await api.post(EVENTS, content=raw)) == [field]
    assert await event_ids(api) == []


async def test_deeply_nested_metadata_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(EVENTS, json={"user": VALID_USER, "metadata": _nested(300)})
    assert fields(response) == ["metadata"]
    ok = await api.post(EVENTS, json={"user": VALID_USER, "metadata": _nested(20)})
    assert ok.status_code == 201


async def test_events_run_on_the_same_context(api: httpx.AsyncClient, ctx: Context) -> None:
    """The API writes where the test fixtures read (a sanity check of the harness)."""
    event = await create(api, {"user": VALID_USER})
    async with ctx.store.read() as tx:
        stored = await tx.get_event("acme", event["id"])
    assert stored is not None
    assert stored.document == event
