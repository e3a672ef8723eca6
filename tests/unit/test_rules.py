"""Which webhooks a change fires (docs/webhook-rules.md): one test case per row of the table,
exact parameters.

The last row (``?$disable_integrations=true`` fires nothing) is the service's ``quiet`` flag: it
never calls ``messages_for``, so it is tested with the service, not here.
"""

from __future__ import annotations

from typing import Any

import pytest

from consent_relay.domain.rules import (
    EVENT_TYPES,
    Change,
    ChangeKind,
    Message,
    effectively_changed,
    messages_for,
)

JSON = dict[str, Any]

T1 = "2026-05-14T09:00:00.000Z"
T2 = "2026-05-14T10:00:00.000Z"


def event_doc(status: str = "confirmed", enabled: bool = True, updated_at: str = T1) -> JSON:
    return {
        "id": "e1",
        "organization_id": "acme",
        "created_at": T1,
        "updated_at": updated_at,
        "status": status,
        "regulation": "gdpr",
        "metadata": {},
        "user": {"id": "u1", "organization_user_id": "jane@example.com", "metadata": {}},
        "consents": {
            "purposes": [{"id": "geo", "enabled": enabled, "enabled_li": None}],
            "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []},
            "channels": [],
        },
        "proofs_id": [],
        "delegate": None,
    }


def user_doc(
    version: int = 1,
    updated_at: str = T1,
    purposes: list[JSON] | None = None,
    metadata: JSON | None = None,
    **extra: Any,
) -> JSON:
    return {
        "id": "u1",
        "organization_id": "acme",
        "organization_user_id": "jane@example.com",
        "version": version,
        "created_at": T1,
        "updated_at": updated_at,
        "metadata": metadata or {},
        "country": None,
        "last_seen_country": None,
        "consents": {
            "purposes": purposes or [],
            "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []},
            "channels": [],
        },
        **extra,
    }


GEO_ON = [{"id": "geo", "enabled": True, "enabled_li": None, "metadata": {}, "values": {}}]
GEO_OFF = [{"id": "geo", "enabled": False, "enabled_li": None, "metadata": {}, "values": {}}]

EVENT_CONFIRMED = event_doc()
EVENT_PENDING = event_doc(status="pending_approval")
EVENT_PENDING_EDITED = event_doc(status="pending_approval", enabled=False, updated_at=T2)
EVENT_APPROVED = event_doc(status="confirmed", updated_at=T2)
EVENT_CONFIRMED_EDITED = event_doc(status="confirmed", enabled=False, updated_at=T2)

USER_IDENTITY_ONLY = user_doc()  # a new user, nothing applied (pending event)
USER_NEW_APPLIED = user_doc(purposes=GEO_ON)  # a new user, the event applied
USER_V1 = user_doc(version=1, updated_at=T1, purposes=GEO_ON)
USER_V2 = user_doc(version=2, updated_at=T2, purposes=GEO_OFF)  # effectively changed
USER_V1_BUMPED = user_doc(version=2, updated_at=T2, purposes=GEO_ON)  # bookkeeping only


def created(kind: str, entity: JSON) -> Message:
    return Message(kind, {"entity": entity})


def event_updated(before: JSON, after: JSON) -> Message:
    return Message("event.updated", {"source": after, "old_entity": before, "new_entity": after})


def user_updated(source: JSON | None, before: JSON, after: JSON) -> Message:
    return Message("user.updated", {"source": source, "old_entity": before, "new_entity": after})


MESSAGE_CASES = [
    # Event created, confirmed, user is new
    pytest.param(
        Change(ChangeKind.EVENT_CREATED, event_after=EVENT_CONFIRMED, user_after=USER_NEW_APPLIED),
        [
            created("event.created", EVENT_CONFIRMED),
            created("user.created", USER_NEW_APPLIED),
        ],
        id="event-created-confirmed-new-user",
    ),
    # Event created, confirmed, user exists
    pytest.param(
        Change(
            ChangeKind.EVENT_CREATED,
            event_after=EVENT_CONFIRMED,
            user_before=USER_V1,
            user_after=USER_V2,
        ),
        [
            created("event.created", EVENT_CONFIRMED),
            user_updated(EVENT_CONFIRMED, USER_V1, USER_V2),
        ],
        id="event-created-confirmed-existing-user-changed",
    ),
    pytest.param(
        Change(
            ChangeKind.EVENT_CREATED,
            event_after=EVENT_CONFIRMED,
            user_before=USER_V1,
            user_after=USER_V1,
        ),
        [created("event.created", EVENT_CONFIRMED)],
        id="event-created-confirmed-existing-user-unchanged",
    ),
    pytest.param(
        Change(
            ChangeKind.EVENT_CREATED,
            event_after=EVENT_CONFIRMED,
            user_before=USER_V1,
            user_after=USER_V1_BUMPED,
        ),
        [created("event.created", EVENT_CONFIRMED)],
        id="event-created-confirmed-existing-user-only-version-and-updated-at",
    ),
    # Event created, pending, user is new
    pytest.param(
        Change(ChangeKind.EVENT_CREATED, event_after=EVENT_PENDING, user_after=USER_IDENTITY_ONLY),
        [
            created("event.created", EVENT_PENDING),
            created("user.created", USER_IDENTITY_ONLY),
        ],
        id="event-created-pending-new-user",
    ),
    # Event created, pending, user exists
    pytest.param(
        Change(
            ChangeKind.EVENT_CREATED,
            event_after=EVENT_PENDING,
            user_before=USER_V1,
            user_after=USER_V1,
        ),
        [created("event.created", EVENT_PENDING)],
        id="event-created-pending-existing-user",
    ),
    pytest.param(
        Change(
            ChangeKind.EVENT_CREATED,
            event_after=EVENT_PENDING,
            user_before=USER_V1,
            user_after=USER_V2,
        ),
        [created("event.created", EVENT_PENDING)],
        id="event-created-pending-existing-user-never-user-updated",
    ),
    # Pending event changed, still pending
    pytest.param(
        Change(
            ChangeKind.EVENT_UPDATED,
            event_before=EVENT_PENDING,
            event_after=EVENT_PENDING_EDITED,
            user_before=USER_V1,
            user_after=USER_V1,
        ),
        [created("event.created", EVENT_PENDING_EDITED)],
        id="pending-event-changed-still-pending",
    ),
    # Event confirmed (pending -> confirmed)
    pytest.param(
        Change(
            ChangeKind.EVENT_UPDATED,
            event_before=EVENT_PENDING,
            event_after=EVENT_APPROVED,
            user_before=USER_V1,
            user_after=USER_V2,
        ),
        [
            event_updated(EVENT_PENDING, EVENT_APPROVED),
            user_updated(EVENT_APPROVED, USER_V1, USER_V2),
        ],
        id="pending-to-confirmed-user-changed",
    ),
    pytest.param(
        Change(
            ChangeKind.EVENT_UPDATED,
            event_before=EVENT_PENDING,
            event_after=EVENT_APPROVED,
            user_before=USER_V1,
            user_after=USER_V1,
        ),
        [event_updated(EVENT_PENDING, EVENT_APPROVED)],
        id="pending-to-confirmed-user-unchanged",
    ),
    pytest.param(
        Change(
            ChangeKind.EVENT_UPDATED,
            event_before=EVENT_PENDING,
            event_after=EVENT_APPROVED,
            user_before=USER_V1,
            user_after=USER_V1_BUMPED,
        ),
        [event_updated(EVENT_PENDING, EVENT_APPROVED)],
        id="pending-to-confirmed-only-version-and-updated-at",
    ),
    # Confirmed event changed
    pytest.param(
        Change(
            ChangeKind.EVENT_UPDATED,
            event_before=EVENT_CONFIRMED,
            event_after=EVENT_CONFIRMED_EDITED,
            user_before=USER_V1,
            user_after=USER_V2,
        ),
        [
            event_updated(EVENT_CONFIRMED, EVENT_CONFIRMED_EDITED),
            user_updated(EVENT_CONFIRMED_EDITED, USER_V1, USER_V2),
        ],
        id="confirmed-event-changed-user-changed",
    ),
    pytest.param(
        Change(
            ChangeKind.EVENT_UPDATED,
            event_before=EVENT_CONFIRMED,
            event_after=EVENT_CONFIRMED_EDITED,
            user_before=USER_V1,
            user_after=USER_V1,
        ),
        [event_updated(EVENT_CONFIRMED, EVENT_CONFIRMED_EDITED)],
        id="confirmed-event-changed-user-unchanged",
    ),
    # Event deleted
    pytest.param(
        Change(
            ChangeKind.EVENT_DELETED,
            event_before=EVENT_CONFIRMED,
            user_before=USER_V2,
            user_after=USER_V1,
        ),
        [
            created("event.deleted", EVENT_CONFIRMED),
            user_updated(EVENT_CONFIRMED, USER_V2, USER_V1),
        ],
        id="event-deleted-user-differs",
    ),
    pytest.param(
        Change(
            ChangeKind.EVENT_DELETED,
            event_before=EVENT_CONFIRMED,
            user_before=USER_V1,
            user_after=USER_V1_BUMPED,
        ),
        [created("event.deleted", EVENT_CONFIRMED)],
        id="event-deleted-user-same",
    ),
    pytest.param(
        Change(
            ChangeKind.EVENT_DELETED,
            event_before=EVENT_PENDING,
            user_before=USER_V1,
            user_after=USER_V1,
        ),
        [created("event.deleted", EVENT_PENDING)],
        id="pending-event-deleted",
    ),
    # User created by the API
    pytest.param(
        Change(ChangeKind.USER_CREATED, user_after=USER_V1),
        [created("user.created", USER_V1)],
        id="user-created-by-api",
    ),
    # User changed by the API
    pytest.param(
        Change(
            ChangeKind.USER_UPDATED,
            user_before=USER_V1,
            user_after=user_doc(version=2, updated_at=T2, purposes=GEO_ON, metadata={"a": 1}),
        ),
        [
            user_updated(
                None,
                USER_V1,
                user_doc(version=2, updated_at=T2, purposes=GEO_ON, metadata={"a": 1}),
            )
        ],
        id="user-changed-by-api",
    ),
    pytest.param(
        Change(ChangeKind.USER_UPDATED, user_before=USER_V1, user_after=USER_V1_BUMPED),
        [],
        id="user-changed-by-api-only-version-and-updated-at",
    ),
    pytest.param(
        Change(ChangeKind.USER_UPDATED, user_before=USER_V1, user_after=USER_V1),
        [],
        id="user-changed-by-api-identical",
    ),
    # User deleted
    pytest.param(
        Change(ChangeKind.USER_DELETED, user_before=USER_V2),
        [created("user.deleted", USER_V2)],
        id="user-deleted",
    ),
]


@pytest.mark.parametrize(("change", "expected"), MESSAGE_CASES)
def test_messages_for(change: Change, expected: list[Message]) -> None:
    fired = messages_for(change)
    assert fired == expected
    assert all(message.type in EVENT_TYPES for message in fired)


@pytest.mark.parametrize(
    ("change", "entity_key", "expected_entity"),
    [
        pytest.param(
            Change(ChangeKind.EVENT_CREATED, event_after=EVENT_CONFIRMED, user_after=USER_V1),
            "entity",
            EVENT_CONFIRMED,
            id="event-created-carries-the-event-itself",
        ),
        pytest.param(
            Change(
                ChangeKind.EVENT_DELETED,
                event_before=EVENT_CONFIRMED,
                user_before=USER_V1,
                user_after=USER_V1,
            ),
            "entity",
            EVENT_CONFIRMED,
            id="event-deleted-carries-the-deleted-event",
        ),
        pytest.param(
            Change(ChangeKind.USER_DELETED, user_before=USER_V2),
            "entity",
            USER_V2,
            id="user-deleted-carries-the-deleted-user",
        ),
        pytest.param(
            Change(
                ChangeKind.EVENT_UPDATED,
                event_before=EVENT_PENDING,
                event_after=EVENT_APPROVED,
                user_before=USER_V1,
                user_after=USER_V2,
            ),
            "source",
            EVENT_APPROVED,
            id="event-updated-source-is-the-event-after",
        ),
    ],
)
def test_first_message_carries_the_entity_unchanged(
    change: Change, entity_key: str, expected_entity: JSON
) -> None:
    first = messages_for(change)[0]
    assert first.parameters[entity_key] is expected_entity


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(Change(ChangeKind.EVENT_CREATED, user_after=USER_V1), id="created-no-event"),
        pytest.param(
            Change(ChangeKind.EVENT_CREATED, event_after=EVENT_CONFIRMED),
            id="created-new-user-missing",
        ),
        pytest.param(
            Change(ChangeKind.EVENT_UPDATED, event_after=EVENT_APPROVED),
            id="updated-no-event-before",
        ),
        pytest.param(
            Change(ChangeKind.EVENT_DELETED, user_before=USER_V1, user_after=USER_V1),
            id="deleted-no-event",
        ),
        pytest.param(Change(ChangeKind.USER_CREATED), id="user-created-no-user"),
        pytest.param(
            Change(ChangeKind.USER_UPDATED, user_after=USER_V1), id="user-updated-no-before"
        ),
        pytest.param(Change(ChangeKind.USER_DELETED), id="user-deleted-no-user"),
    ],
)
def test_missing_entity_is_an_error(change: Change) -> None:
    with pytest.raises(ValueError, match="needs that entity"):
        messages_for(change)


# -- effectively_changed ---------------------------------------------------------------------


EFFECTIVELY_CHANGED_CASES = [
    pytest.param(USER_V1, USER_V1, False, id="same-object"),
    pytest.param(user_doc(), user_doc(), False, id="equal-copies"),
    pytest.param(user_doc(version=1), user_doc(version=7), False, id="version-ignored"),
    pytest.param(user_doc(updated_at=T1), user_doc(updated_at=T2), False, id="updated-at-ignored"),
    pytest.param(USER_V1, USER_V1_BUMPED, False, id="version-and-updated-at-ignored"),
    pytest.param(
        {k: v for k, v in USER_V1.items() if k not in ("version", "updated_at")},
        USER_V1,
        False,
        id="ignored-keys-absent-on-one-side",
    ),
    pytest.param(USER_V1, USER_V2, True, id="purpose-choice-differs"),
    pytest.param(
        user_doc(purposes=GEO_ON),
        user_doc(purposes=[{**GEO_ON[0], "values": {"topics": {"value": "tech"}}}]),
        True,
        id="nested-preference-value-differs",
    ),
    pytest.param(user_doc(), user_doc(metadata={"a": 1}), True, id="metadata-differs"),
    pytest.param(
        user_doc(metadata={"version": 1, "updated_at": T1}),
        user_doc(metadata={"version": 2, "updated_at": T2}),
        True,
        id="nested-version-and-updated-at-not-ignored",
    ),
    pytest.param(user_doc(country=None), user_doc(country="FR"), True, id="country-differs"),
    pytest.param(
        user_doc(), user_doc(last_seen_country="ES"), True, id="last-seen-country-differs"
    ),
    pytest.param(
        user_doc(),
        {**user_doc(), "organization_user_id": "janet@example.com"},
        True,
        id="organization-user-id-differs",
    ),
    pytest.param(user_doc(), {**user_doc(), "created_at": T2}, True, id="created-at-differs"),
    pytest.param(user_doc(), {**user_doc(), "id": "u2"}, True, id="id-differs"),
    pytest.param(
        user_doc(),
        {k: v for k, v in user_doc().items() if k != "country"},
        True,
        id="key-missing-on-one-side",
    ),
    pytest.param(None, None, False, id="none-none"),
    pytest.param(None, USER_V1, True, id="none-before"),
    pytest.param(USER_V1, None, True, id="none-after"),
]


@pytest.mark.parametrize(("before", "after", "expected"), EFFECTIVELY_CHANGED_CASES)
def test_effectively_changed(before: JSON | None, after: JSON | None, expected: bool) -> None:
    assert effectively_changed(before, after) is expected
    assert effectively_changed(after, before) is expected  # symmetric
