"""The accountability ledger: written with every delivered result, read through the API,
on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import itertools

import httpx

from consent_relay.domain import ledger as chain
from consent_relay.runtime import Context
from consent_relay.services import ledger
from consent_relay.storage import inspect
from tests.e2e.helpers import consent_event, eventually, get_json, post_event, read
from tests.integration.test_dashboard import csrf_of, sign_in
from tests.receiver import Receiver, status_sequence
from tests.workers import make_webhook, running


async def test_every_delivered_message_leaves_a_chained_entry(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    email = await make_webhook(api, receiver.url("/email"))
    receiver.behaviours["/crm"] = status_sequence(*([500] * 10))
    crm = await make_webhook(api, receiver.url("/crm"))  # never delivers: no entry
    created = await post_event(api, consent_event("jane@example.com", "news", True))
    jane = created["user"]["id"]
    await post_event(api, consent_event("jane@example.com", "news", False))
    async with running(ctx):
        await receiver.wait_for(4, "/email")

        async def four() -> bool:
            return await read(ctx, inspect.count, "ledger_entries") >= 4

        await eventually(four, within=20, what="four ledger entries")

    page = await get_json(api, "/v1/ledger")
    entries = page["data"]
    assert page["next_cursor"] is None
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert {e["webhook_id"] for e in entries} == {email["id"]}
    assert crm["id"] not in {e["webhook_id"] for e in entries}
    sent = {r.headers["webhook-id"]: r.body for r in receiver.at("/email")}
    for entry in entries:
        assert entry["payload_sha256"] == hashlib.sha256(sent[entry["message_id"]]).hexdigest()
        assert entry["status_code"] == 204
        assert set(entry) >= {
            "seq", "message_id", "type", "user_id", "webhook_id", "delivered_at",
            "status_code", "payload_sha256", "prev_hash", "entry_hash",
        }  # fmt: skip
    assert entries[0]["prev_hash"] == chain.GENESIS
    for before, after in itertools.pairwise(entries):
        assert after["prev_hash"] == before["entry_hash"]
    assert [e["type"] for e in entries if e["user_id"] == jane] == [
        "event.created", "user.created", "event.created", "user.updated",
    ]  # fmt: skip
    checked = await ledger.verify(ctx)
    assert [(v.organization_id, v.entries, v.first_break) for v in checked] == [("acme", 4, None)]


async def test_the_ledger_answers_by_user_and_webhook_also_after_deletion(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    email = await make_webhook(api, receiver.url("/email"), event_types=["user.updated"])
    crm = await make_webhook(api, receiver.url("/crm"), event_types=["user.updated"])
    created = await post_event(api, consent_event("jane@example.com", "news", True))
    jane = created["user"]["id"]
    await post_event(api, consent_event("jane@example.com", "news", False))
    await post_event(api, consent_event("joe@example.com", "news", True))
    await post_event(api, consent_event("joe@example.com", "news", False))
    async with running(ctx):
        await receiver.wait_for(4)

        async def four() -> bool:
            return await read(ctx, inspect.count, "ledger_entries") >= 4

        await eventually(four, within=20, what="four ledger entries")
    response = await api.delete(f"/v1/consents/users/{jane}")
    assert response.status_code == 204

    # "Was the email tool told of Jane's withdrawal, and when?" is one call.
    told = await get_json(api, "/v1/ledger", user_id=jane, webhook_id=email["id"])
    assert [(e["type"], e["user_id"], e["webhook_id"]) for e in told["data"]] == [
        ("user.updated", jane, email["id"])
    ]
    assert told["data"][0]["delivered_at"].endswith("Z")
    about_jane = await get_json(api, "/v1/ledger", user_id=jane)
    assert {e["webhook_id"] for e in about_jane["data"]} == {email["id"], crm["id"]}

    first = await get_json(api, "/v1/ledger", limit="3")
    assert len(first["data"]) == 3
    assert first["next_cursor"]
    rest = await get_json(api, "/v1/ledger", limit="3", cursor=first["next_cursor"])
    assert [e["seq"] for e in first["data"] + rest["data"]] == [1, 2, 3, 4]
    assert rest["next_cursor"] is None

    when = told["data"][0]["delivered_at"]
    assert (await get_json(api, "/v1/ledger", since=when, user_id=jane))["data"]
    before = await get_json(api, "/v1/ledger", until=when, user_id=jane, webhook_id=email["id"])
    assert before["data"] == []


async def test_bad_ledger_queries_are_422_naming_the_field(api: httpx.AsyncClient) -> None:
    for params, field in (
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "nope"}, "cursor"),
    ):
        response = await api.get("/v1/ledger", params=params)
        assert response.status_code == 422, response.text
        assert field in response.text


async def test_the_ledger_is_per_organization(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/ledger")
    assert response.status_code == 401


async def test_the_dashboard_user_page_shows_who_was_told_what(
    api: httpx.AsyncClient, ctx: Context, receiver: Receiver, org: tuple[str, str]
) -> None:
    await sign_in(api, org[1])
    await make_webhook(api, receiver.url("/email"), description="Email tool")
    created = await post_event(api, consent_event("jane@example.com", "news", True))
    jane = created["user"]["id"]
    async with running(ctx):
        await receiver.wait_for(2)

        async def two() -> bool:
            return await read(ctx, inspect.count, "ledger_entries") == 2

        await eventually(two, within=20, what="two ledger entries")
    users = await api.get("/dashboard/users")
    assert f'/dashboard/users/{jane}"' in users.text
    page = await api.get(f"/dashboard/users/{jane}")
    assert page.status_code == 200, page.text
    assert page.text.count('data-testid="ledger-row"') == 2
    assert "Email tool" in page.text
    assert "user.created" in page.text
    assert 'data-testid="erase-user"' in page.text
    erased = await api.post(f"/dashboard/users/{jane}/erase", data={"csrf_token": csrf_of(page)})
    assert erased.status_code == 303, erased.text
    assert erased.headers["location"] == f"/dashboard/users/{jane}?notice=erased"
    assert (await api.get(f"/v1/consents/users/{jane}")).status_code == 404
    purged = await read(ctx, inspect.count, "messages", user_id=jane, purge_reason="erased")
    assert purged == 2  # delivered: erased at once (the user.deleted is pending)
    delivered_rows = await read(ctx, inspect.rows, "deliveries", user_id=jane, status="delivered")
    delivered = delivered_rows[0]["id"]
    shown = await api.get(f"/dashboard/deliveries/{delivered}")
    assert shown.status_code == 200, shown.text
    assert "payload erased" in shown.text
    assert "jane@example.com" not in shown.text
    after = await api.get(f"/dashboard/users/{jane}?notice=erased")
    assert "personal data erased." in after.text
    assert after.status_code == 200
    assert 'data-testid="user-deleted"' in after.text
    assert after.text.count('data-testid="ledger-row"') == 2  # told before the deletion
    assert "personal data erased" in after.text
    assert (await api.get("/dashboard/users/nobody")).status_code == 404
