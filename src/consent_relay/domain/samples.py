"""Sample payloads of every event type, as Didomi's console offers them (pure)."""

from __future__ import annotations

import copy
from typing import Any

from consent_relay.domain import rules
from consent_relay.domain.flatten import flatten_body

JSON = dict[str, Any]

SAMPLE_USER_ID = "sample-user-0001"  # the user of the sample payloads shown (GET .../samples)
TEST_USER_PREFIX = "test/"


def test_user_id(webhook_id: str) -> str:
    """The user of a webhook's test sends: ``test/<webhook id>``.

    Deliveries queue per (webhook, user), so test sends must not share a user with real
    deliveries: behind a real user's failing delivery a test would wait for its retries, and a
    test stuck on a dead receiver would hold a real user back. A real user id never holds a
    slash (``schemas.Identifier`` refuses ``/``; generated ids are UUIDs), so this id is one
    no real user can have. Test sends to one webhook share it: they arrive in the order sent.
    """
    return TEST_USER_PREFIX + webhook_id


def is_reserved_user_id(user_id: str) -> bool:
    """Whether ``user_id`` is of the form kept for test sends (no real user may take it)."""
    return user_id.startswith(TEST_USER_PREFIX)


_EVENT: JSON = {
    "id": "0190f4c2-6a1e-7c3b-9d52-2f7e6b1a0c11",
    "organization_id": "acme",
    "created_at": "2026-05-14T09:12:31.402Z",
    "updated_at": "2026-05-14T09:12:31.402Z",
    "status": "confirmed",
    "regulation": "gdpr",
    "metadata": {"source": "website-banner"},
    "user": {
        "id": SAMPLE_USER_ID,
        "organization_user_id": "jane@example.com",
        "metadata": {},
        "country": "FR",
        "last_seen_country": "FR",
    },
    "consents": {
        "purposes": [
            {"id": "geo_location", "enabled": True, "enabled_li": None, "metadata": {},
             "values": {}},
            {"id": "market_research", "enabled": True, "enabled_li": None, "metadata": {},
             "values": {"topics": {"value": "tech,travel"}}},
        ],
        "vendors": {"enabled": ["google"], "disabled": [], "enabled_li": [], "disabled_li": []},
        "channels": [{"id": "email", "enabled": True, "metadata": {}}],
    },
    "proofs_id": [],
    "delegate": None,
}  # fmt: skip

_USER_BEFORE: JSON = {
    "id": SAMPLE_USER_ID,
    "organization_id": "acme",
    "organization_user_id": "jane@example.com",
    "version": 1,
    "created_at": "2026-05-01T08:00:00.000Z",
    "updated_at": "2026-05-01T08:00:00.000Z",
    "metadata": {},
    "country": "FR",
    "last_seen_country": "FR",
    "consents": {
        "purposes": [
            {"id": "geo_location", "enabled": False, "enabled_li": None, "metadata": {},
             "values": {}},
        ],
        "vendors": {"enabled": [], "disabled": ["google"], "enabled_li": [], "disabled_li": []},
        "channels": [],
    },
}  # fmt: skip


def _user_after() -> JSON:
    user = copy.deepcopy(_USER_BEFORE)
    user["version"] = 2
    user["updated_at"] = _EVENT["created_at"]
    user["consents"] = copy.deepcopy(_EVENT["consents"])
    return user


def sample_parameters(message_type: str, *, user_id: str = SAMPLE_USER_ID) -> JSON:
    """The parameters of a realistic message of that type, about user ``user_id`` (a test
    send names its reserved user, so a receiver never takes it for a real user's change)."""
    event, before, after = copy.deepcopy(_EVENT), copy.deepcopy(_USER_BEFORE), _user_after()
    event["user"]["id"] = before["id"] = after["id"] = user_id
    old_event = {**copy.deepcopy(event), "status": "pending_approval"}
    samples: dict[str, JSON] = {
        "event.created": {"entity": event},
        "event.updated": {"source": event, "old_entity": old_event, "new_entity": event},
        "event.deleted": {"entity": event},
        "user.created": {"entity": after},
        "user.updated": {"source": event, "old_entity": before, "new_entity": after},
        "user.deleted": {"entity": after},
    }
    if message_type not in samples:
        raise ValueError(f"unknown event type {message_type!r}")
    return samples[message_type]


def sample_body(message_type: str, *, flatten: bool = False) -> JSON:
    body: JSON = {"type": message_type, "parameters": sample_parameters(message_type)}
    return flatten_body(body) if flatten else body


assert set(rules.EVENT_TYPES) == {
    "event.created", "event.updated", "event.deleted", "user.created", "user.updated",
    "user.deleted",
}  # fmt: skip
