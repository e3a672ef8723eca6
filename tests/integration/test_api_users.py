"""Users through the HTTP API, and the consents derived from their events
(docs/webhook-rules.md)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

EVENTS = "/v1/consents/events"
USERS = "/v1/consents/users"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
NO_VENDORS: dict[str, list[str]] = {
    "enabled": [],
    "disabled": [],
    "enabled_li": [],
    "disabled_li": [],
}
EMPTY_CONSENTS: dict[str, Any] = {"purposes": [], "vendors": NO_VENDORS, "channels": []}


def _json(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


async def post(api: httpx.AsyncClient, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(path, json=payload)
    assert response.status_code == 201, response.text
    return _json(response)


async def get_user(
    api: httpx.AsyncClient, user_id: str, regulation: str | None = None
) -> dict[str, Any]:
    params = {"regulation": regulation} if regulation else None
    response = await api.get(f"{USERS}/{user_id}", params=params)
    assert response.status_code == 200, response.text
    return _json(response)


async def event(api: httpx.AsyncClient, user_id: str, **fields: Any) -> dict[str, Any]:
    return await post(api, EVENTS, {"user": {"id": user_id}, **fields})


def problem_fields(response: httpx.Response, status: int) -> list[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    data = _json(response)
    assert data["status"] == status
    return [error["field"] for error in data.get("errors", [])]


def purpose(pid: str, **fields: Any) -> dict[str, Any]:
    return {"id": pid, "enabled": None, "enabled_li": None, "metadata": {}, "values": {}, **fields}


# -- the users API ----------------------------------------------------------------------------


async def test_create_user(api: httpx.AsyncClient) -> None:
    user = await post(
        api,
        USERS,
        {
            "organization_user_id": "jane@example.com",
            "metadata": {"plan": "pro"},
            "country": "FR",
            "last_seen_country": "DE",
        },
    )
    assert str(uuid.UUID(user["id"])) == user["id"]
    assert TIMESTAMP.match(user["created_at"])
    assert user == {
        "id": user["id"],
        "organization_id": "acme",
        "organization_user_id": "jane@example.com",
        "version": 1,
        "created_at": user["created_at"],
        "updated_at": user["created_at"],
        "metadata": {"plan": "pro"},
        "country": "FR",
        "last_seen_country": "DE",
        "consents": EMPTY_CONSENTS,
    }
    assert await get_user(api, user["id"]) == user


async def test_create_user_with_given_id_and_nothing_else(api: httpx.AsyncClient) -> None:
    user = await post(api, USERS, {"id": "user-1"})
    assert user["id"] == "user-1"
    assert user["organization_user_id"] is None
    assert user["metadata"] == {}
    assert user["version"] == 1
    empty = await post(api, USERS, {})
    assert str(uuid.UUID(empty["id"])) == empty["id"]


async def test_create_user_conflicts(api: httpx.AsyncClient) -> None:
    await post(api, USERS, {"id": "user-1", "organization_user_id": "jane"})
    assert problem_fields(await api.post(USERS, json={"id": "user-1"}), 409) == ["id"]
    taken = await api.post(USERS, json={"id": "user-2", "organization_user_id": "jane"})
    assert problem_fields(taken, 409) == ["organization_user_id"]
    assert (await api.get(f"{USERS}/user-2")).status_code == 404
    assert len((await api.get(USERS)).json()["data"]) == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"consents": {"purposes": []}}, "consents"),
        ({"version": 3}, "version"),
        ({"organization_user_id": ""}, "organization_user_id"),
        ({"id": "a b"}, "id"),
        ({"metadata": "x"}, "metadata"),
        ({"country": "F"}, "country"),
    ],
)
async def test_create_user_validation(
    api: httpx.AsyncClient, payload: dict[str, Any], field: str
) -> None:
    assert problem_fields(await api.post(USERS, json=payload), 422) == [field]
    assert (await api.get(USERS)).json() == {"data": [], "next_cursor": None}


async def test_get_unknown_user_is_404(api: httpx.AsyncClient) -> None:
    assert problem_fields(await api.get(f"{USERS}/nobody"), 404) == []
    assert problem_fields(await api.patch(f"{USERS}/nobody", json={"metadata": {}}), 404) == []
    assert problem_fields(await api.delete(f"{USERS}/nobody"), 404) == []


async def test_list_users_by_organization_user_id_and_pages(api: httpx.AsyncClient) -> None:
    created = [await post(api, USERS, {"organization_user_id": f"u{i}"}) for i in range(3)]
    listed = (await api.get(USERS)).json()
    assert listed == {"data": created, "next_cursor": None}

    one = (await api.get(USERS, params={"organization_user_id": "u1"})).json()
    assert one == {"data": [created[1]], "next_cursor": None}
    none = (await api.get(USERS, params={"organization_user_id": "u9"})).json()
    assert none == {"data": [], "next_cursor": None}

    first = (await api.get(USERS, params={"limit": 2})).json()
    assert first["data"] == created[:2]
    assert first["next_cursor"]
    second = (await api.get(USERS, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert second == {"data": created[2:], "next_cursor": None}

    assert problem_fields(await api.get(USERS, params={"limit": 1001}), 422) == ["limit"]
    assert problem_fields(await api.get(USERS, params={"cursor": "zzz"}), 422) == ["cursor"]
    bad_regulation = await api.get(USERS, params={"regulation": "nope"})
    assert problem_fields(bad_regulation, 422) == ["regulation"]


async def test_patch_user_profile(api: httpx.AsyncClient) -> None:
    user = await post(api, USERS, {"organization_user_id": "jane", "metadata": {"a": 1}})
    response = await api.patch(
        f"{USERS}/{user['id']}",
        json={"metadata": {"b": 2}, "country": "FR", "organization_user_id": "jane2"},
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched == {
        **user,
        "organization_user_id": "jane2",
        "metadata": {"a": 1, "b": 2},
        "country": "FR",
        "version": 2,
        "updated_at": patched["updated_at"],
    }
    assert patched["updated_at"] >= user["updated_at"]
    assert await get_user(api, user["id"]) == patched
    by_new = (await api.get(USERS, params={"organization_user_id": "jane2"})).json()["data"]
    assert by_new == [patched]
    assert (await api.get(USERS, params={"organization_user_id": "jane"})).json()["data"] == []


async def test_patch_user_without_effect_keeps_the_version(api: httpx.AsyncClient) -> None:
    user = await post(api, USERS, {"organization_user_id": "jane", "metadata": {"a": 1}})
    patches: list[dict[str, Any]] = [
        {},
        {"metadata": {}},
        {"metadata": {"a": 1}},
        {"organization_user_id": "jane"},
        {"country": None},
    ]
    for patch in patches:
        response = await api.patch(f"{USERS}/{user['id']}", json=patch)
        assert response.status_code == 200, response.text
        assert response.json() == user
    assert await get_user(api, user["id"]) == user


async def test_patch_user_conflicts_and_validation(api: httpx.AsyncClient) -> None:
    jane = await post(api, USERS, {"organization_user_id": "jane"})
    await post(api, USERS, {"organization_user_id": "john"})
    taken = await api.patch(f"{USERS}/{jane['id']}", json={"organization_user_id": "john"})
    assert problem_fields(taken, 409) == ["organization_user_id"]
    refused = await api.patch(f"{USERS}/{jane['id']}", json={"consents": {}})
    assert problem_fields(refused, 422) == ["consents"]
    refused = await api.patch(f"{USERS}/{jane['id']}", json={"id": "other"})
    assert problem_fields(refused, 422) == ["id"]
    assert await get_user(api, jane["id"]) == jane


async def test_delete_user_deletes_its_events(api: httpx.AsyncClient) -> None:
    first = await post(api, EVENTS, {"user": {"organization_user_id": "jane"}})
    user_id = first["user"]["id"]
    second = await event(api, user_id, status="pending_approval")
    other = await post(api, EVENTS, {"user": {"organization_user_id": "john"}})

    response = await api.delete(f"{USERS}/{user_id}")
    assert response.status_code == 204
    assert response.content == b""
    assert (await api.get(f"{USERS}/{user_id}")).status_code == 404
    for gone in (first, second):
        assert (await api.get(f"{EVENTS}/{gone['id']}")).status_code == 404
    assert (await api.get(EVENTS, params={"user_id": user_id})).json()["data"] == []
    assert [e["id"] for e in (await api.get(EVENTS)).json()["data"]] == [other["id"]]
    assert (await api.delete(f"{USERS}/{user_id}")).status_code == 404

    # The organization_user_id is free again: a new user, from scratch.
    again = await post(api, EVENTS, {"user": {"organization_user_id": "jane"}})
    assert again["user"]["id"] != user_id
    assert (await get_user(api, again["user"]["id"]))["version"] == 1


# -- derived consents -------------------------------------------------------------------------


async def test_user_consents_are_the_fold_of_confirmed_events(api: httpx.AsyncClient) -> None:
    e1 = await post(
        api,
        EVENTS,
        {
            "user": {
                "organization_user_id": "jane",
                "metadata": {"m1": 1},
                "last_seen_country": "FR",
            },
            "consents": {
                "purposes": [
                    {
                        "id": "p1",
                        "enabled": True,
                        "metadata": {"a": 1},
                        "values": {"topics": {"value": "tech"}},
                    }
                ],
                "vendors": {"enabled": ["v1", "v2"]},
                "channels": [{"id": "email", "enabled": True}],
            },
        },
    )
    user_id = e1["user"]["id"]
    assert (await get_user(api, user_id))["version"] == 1

    await event(
        api,
        user_id,
        user={"id": user_id, "metadata": {"m2": 2}, "country": "DE"},
        consents={
            "purposes": [
                {
                    "id": "p1",
                    "enabled": False,
                    "enabled_li": True,
                    "metadata": {"b": 2},
                    "values": {"freq": {"value": "weekly"}},
                },
                {"id": "p2", "enabled": True},
            ],
            "vendors": {"disabled": ["v1"], "enabled_li": ["v3"]},
            "channels": [{"id": "email", "enabled": None}, {"id": "sms", "enabled": False}],
        },
    )
    await event(
        api,
        user_id,
        consents={"purposes": [{"id": "p1", "values": {"topics": {"value": "travel"}}}]},
    )

    user = await get_user(api, user_id)
    assert user == {
        "id": user_id,
        "organization_id": "acme",
        "organization_user_id": "jane",
        "version": 3,
        "created_at": e1["created_at"],
        "updated_at": user["updated_at"],
        "metadata": {"m1": 1, "m2": 2},
        "country": "DE",
        "last_seen_country": "FR",
        "consents": {
            "purposes": [
                purpose(
                    "p1",
                    enabled=False,
                    enabled_li=True,
                    metadata={"a": 1, "b": 2},
                    values={"topics": {"value": "travel"}, "freq": {"value": "weekly"}},
                ),
                purpose("p2", enabled=True),
            ],
            "vendors": {
                "enabled": ["v2"],
                "disabled": ["v1"],
                "enabled_li": ["v3"],
                "disabled_li": [],
            },
            "channels": [
                {"id": "email", "enabled": True, "metadata": {}},
                {"id": "sms", "enabled": False, "metadata": {}},
            ],
        },
    }
    # Re-enabling moves the vendor back.
    await event(api, user_id, consents={"vendors": {"enabled": ["v1"], "disabled_li": ["v3"]}})
    vendors = (await get_user(api, user_id))["consents"]["vendors"]
    assert vendors == {
        "enabled": ["v2", "v1"],
        "disabled": [],
        "enabled_li": [],
        "disabled_li": ["v3"],
    }


async def test_consents_are_kept_per_regulation(api: httpx.AsyncClient) -> None:
    gdpr = await post(
        api,
        EVENTS,
        {
            "user": {"organization_user_id": "jane"},
            "consents": {"purposes": [{"id": "analytics", "enabled": True}]},
        },
    )
    user_id = gdpr["user"]["id"]
    await event(
        api,
        user_id,
        regulation="cpra",
        consents={"purposes": [{"id": "sale", "enabled": False}], "vendors": {"enabled": ["v"]}},
    )

    as_gdpr = await get_user(api, user_id)
    assert as_gdpr["consents"] == {
        "purposes": [purpose("analytics", enabled=True)],
        "vendors": NO_VENDORS,
        "channels": [],
    }
    assert await get_user(api, user_id, "gdpr") == as_gdpr
    as_cpra = await get_user(api, user_id, "cpra")
    assert as_cpra["consents"] == {
        "purposes": [purpose("sale", enabled=False)],
        "vendors": {**NO_VENDORS, "enabled": ["v"]},
        "channels": [],
    }
    assert {k: v for k, v in as_cpra.items() if k != "consents"} == {
        k: v for k, v in as_gdpr.items() if k != "consents"
    }
    assert (await get_user(api, user_id, "lgpd"))["consents"] == EMPTY_CONSENTS
    listed = (await api.get(USERS, params={"regulation": "cpra"})).json()["data"]
    assert listed == [as_cpra]
    assert problem_fields(await api.get(f"{USERS}/{user_id}?regulation=xyz"), 422) == ["regulation"]


async def test_version_goes_up_by_one_per_effective_change_only(api: httpx.AsyncClient) -> None:
    choice = {"purposes": [{"id": "p1", "enabled": True}]}
    first = await post(api, EVENTS, {"user": {"organization_user_id": "jane"}, "consents": choice})
    user_id = first["user"]["id"]
    versions = [(await get_user(api, user_id))["version"]]

    await event(api, user_id, consents=choice)  # the same choice again: no change
    versions.append((await get_user(api, user_id))["version"])
    await event(api, user_id, consents={"purposes": [{"id": "p1", "enabled": False}]})
    versions.append((await get_user(api, user_id))["version"])
    await event(api, user_id, metadata={"only": "the event's own metadata"})
    versions.append((await get_user(api, user_id))["version"])
    pending = await event(
        api, user_id, status="pending_approval", consents={"purposes": [{"id": "p2"}]}
    )
    versions.append((await get_user(api, user_id))["version"])
    await api.patch(f"{EVENTS}/{pending['id']}", json={"status": "confirmed"})
    versions.append((await get_user(api, user_id))["version"])
    await event(api, user_id, regulation="cpra", consents=choice)  # another regulation changes
    versions.append((await get_user(api, user_id))["version"])
    await api.patch(f"{USERS}/{user_id}", json={"metadata": {"x": 1}})
    versions.append((await get_user(api, user_id))["version"])
    await api.patch(f"{USERS}/{user_id}", json={"metadata": {"x": 1}})
    versions.append((await get_user(api, user_id))["version"])

    assert versions == [1, 1, 2, 2, 2, 3, 4, 5, 5]


async def test_user_created_by_a_pending_event_gets_only_its_identity(
    api: httpx.AsyncClient,
) -> None:
    pending = await post(
        api,
        EVENTS,
        {
            "status": "pending_approval",
            "user": {
                "id": "user-1",
                "organization_user_id": "jane",
                "metadata": {"a": 1},
                "country": "FR",
                "last_seen_country": "FR",
            },
            "consents": {"purposes": [{"id": "p1", "enabled": True}]},
        },
    )
    user = await get_user(api, "user-1")
    assert user == {
        "id": "user-1",
        "organization_id": "acme",
        "organization_user_id": "jane",
        "version": 1,
        "created_at": user["created_at"],
        "updated_at": user["created_at"],
        "metadata": {},
        "country": None,
        "last_seen_country": None,
        "consents": EMPTY_CONSENTS,
    }
    assert pending["user"]["id"] == "user-1"


async def test_organization_user_id_is_set_only_when_the_user_has_none(
    api: httpx.AsyncClient,
) -> None:
    await post(api, EVENTS, {"user": {"id": "user-1"}})
    assert (await get_user(api, "user-1"))["organization_user_id"] is None
    await post(api, EVENTS, {"user": {"id": "user-1", "organization_user_id": "jane"}})
    user = await get_user(api, "user-1")
    assert user["organization_user_id"] == "jane"
    assert user["version"] == 2
    await post(api, EVENTS, {"user": {"id": "user-1", "organization_user_id": "other"}})
    user = await get_user(api, "user-1")
    assert user["organization_user_id"] == "jane"
    assert user["version"] == 2
    # "other" was never given to anyone.
    assert (await api.get(USERS, params={"organization_user_id": "other"})).json()["data"] == []


async def test_imported_events_fold_in_created_at_order(api: httpx.AsyncClient) -> None:
    recent = await post(
        api,
        EVENTS,
        {
            "user": {"organization_user_id": "jane", "country": "FR"},
            "consents": {"purposes": [{"id": "p1", "enabled": True}]},
        },
    )
    user_id = recent["user"]["id"]
    await event(
        api,
        user_id,
        created_at="2020-01-01T00:00:00Z",
        user={"id": user_id, "country": "US"},
        consents={"purposes": [{"id": "p1", "enabled": False}, {"id": "p0", "enabled": False}]},
    )
    user = await get_user(api, user_id)
    # The import sorts first: the recent choice for p1 and the country still win.
    assert user["consents"]["purposes"] == [
        purpose("p1", enabled=True),
        purpose("p0", enabled=False),
    ]
    assert user["country"] == "FR"
    assert user["version"] == 2


async def test_same_created_at_folds_in_the_order_acknowledged(api: httpx.AsyncClient) -> None:
    at = "2021-06-01T12:00:00.000Z"
    first = await post(
        api,
        EVENTS,
        {
            "user": {"organization_user_id": "jane"},
            "created_at": at,
            "consents": {"purposes": [{"id": "p1", "enabled": True}]},
        },
    )
    user_id = first["user"]["id"]
    await event(
        api, user_id, created_at=at, consents={"purposes": [{"id": "p1", "enabled": False}]}
    )
    assert (await get_user(api, user_id))["consents"]["purposes"] == [purpose("p1", enabled=False)]


async def test_approved_pending_event_folds_at_its_approval(api: httpx.AsyncClient) -> None:
    pending = await post(
        api,
        EVENTS,
        {
            "status": "pending_approval",
            "user": {"organization_user_id": "jane"},
            "consents": {"purposes": [{"id": "p1", "enabled": True}]},
        },
    )
    user_id = pending["user"]["id"]
    await event(api, user_id, consents={"purposes": [{"id": "p1", "enabled": False}]})
    assert (await get_user(api, user_id))["consents"]["purposes"] == [purpose("p1", enabled=False)]
    # Created earlier, approved later: it applies after the other event.
    await api.patch(f"{EVENTS}/{pending['id']}", json={"status": "confirmed"})
    assert (await get_user(api, user_id))["consents"]["purposes"] == [purpose("p1", enabled=True)]


async def test_deleting_an_event_recomputes_the_user(api: httpx.AsyncClient) -> None:
    e1 = await post(
        api,
        EVENTS,
        {
            "user": {"organization_user_id": "jane", "metadata": {"m1": 1}},
            "consents": {
                "purposes": [{"id": "p1", "enabled": True, "values": {"t": {"value": "a"}}}],
                "vendors": {"enabled": ["v1"]},
            },
        },
    )
    user_id = e1["user"]["id"]
    e2 = await event(
        api,
        user_id,
        user={"id": user_id, "metadata": {"m2": 2}, "country": "DE"},
        consents={
            "purposes": [{"id": "p1", "enabled": False}, {"id": "p2", "enabled": True}],
            "vendors": {"disabled": ["v1"]},
        },
    )
    e3 = await event(
        api, user_id, consents={"purposes": [{"id": "p1", "values": {"t": {"value": "b"}}}]}
    )
    assert (await get_user(api, user_id))["version"] == 3

    assert (await api.delete(f"{EVENTS}/{e2['id']}")).status_code == 204
    user = await get_user(api, user_id)
    assert user["version"] == 4
    assert user["metadata"] == {"m1": 1}
    assert user["country"] is None
    assert user["consents"] == {
        "purposes": [purpose("p1", enabled=True, values={"t": {"value": "b"}})],
        "vendors": {**NO_VENDORS, "enabled": ["v1"]},
        "channels": [],
    }

    # Deleting an event that made no difference leaves the user (and its version) as it is.
    same = await event(
        api, user_id, consents={"purposes": [{"id": "p1", "values": {"t": {"value": "b"}}}]}
    )
    assert (await get_user(api, user_id))["version"] == 4
    await api.delete(f"{EVENTS}/{same['id']}")
    assert await get_user(api, user_id) == user

    await api.delete(f"{EVENTS}/{e3['id']}")
    await api.delete(f"{EVENTS}/{e1['id']}")
    last = await get_user(api, user_id)
    assert last["consents"] == EMPTY_CONSENTS
    assert last["metadata"] == {}
    assert last["organization_user_id"] == "jane"  # its identity stays
    assert last["version"] == 6


async def test_deleting_a_pending_event_changes_nothing(api: httpx.AsyncClient) -> None:
    first = await post(api, EVENTS, {"user": {"organization_user_id": "jane"}})
    user_id = first["user"]["id"]
    before = await get_user(api, user_id)
    pending = await event(
        api, user_id, status="pending_approval", consents={"purposes": [{"id": "p1"}]}
    )
    assert (await api.delete(f"{EVENTS}/{pending['id']}")).status_code == 204
    assert await get_user(api, user_id) == before


async def test_users_api_profile_changes_survive_a_refold(api: httpx.AsyncClient) -> None:
    first = await post(
        api, EVENTS, {"user": {"organization_user_id": "jane", "metadata": {"from": "event"}}}
    )
    user_id = first["user"]["id"]
    await api.patch(f"{USERS}/{user_id}", json={"metadata": {"by": "api"}, "country": "IT"})
    second = await event(api, user_id, consents={"purposes": [{"id": "p1", "enabled": True}]})
    await api.delete(f"{EVENTS}/{second['id']}")
    user = await get_user(api, user_id)
    assert user["metadata"] == {"from": "event", "by": "api"}
    assert user["country"] == "IT"
    assert user["consents"] == EMPTY_CONSENTS
