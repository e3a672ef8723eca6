"""Sample payloads of every event type, as Didomi's console offers them (pure)."""

from __future__ import annotations

import copy
from typing import Any

from consent_relay.domain import rules
from consent_relay.domain.flatten import flatten_body

JSON = dict[str, Any]

SAMPLE_USER_ID = "sample-user-0001"

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


def sample_parameters(message_type: str) -> JSON:
    """The parameters of a realistic message of that type."""
    event, before, after = copy.deepcopy(_EVENT), copy.deepcopy(_USER_BEFORE), _user_after()
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
