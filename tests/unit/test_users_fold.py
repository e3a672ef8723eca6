"""The user-state fold (docs/webhook-rules.md): how confirmed events and users-API patches
make a user.

Pending events are never folded: the service does not pass them to the fold at all, so here they
simply are not among the items.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from consent_relay.domain.users import (
    FoldItem,
    UserState,
    apply_consents,
    apply_profile,
    empty_consents,
    fold,
    user_view,
)

JSON = dict[str, Any]

T1 = "2026-05-14T09:00:00.000Z"
T2 = "2026-05-14T10:00:00.000Z"
T3 = "2026-05-14T11:00:00.000Z"
T4 = "2026-05-14T12:00:00.000Z"


def purpose(
    pid: str,
    enabled: bool | None = None,
    enabled_li: bool | None = None,
    metadata: JSON | None = None,
    values: JSON | None = None,
) -> JSON:
    """A purpose as the fold stores it: every key present."""
    return {
        "id": pid,
        "enabled": enabled,
        "enabled_li": enabled_li,
        "metadata": metadata or {},
        "values": values or {},
    }


def channel(cid: str, enabled: bool | None = None, metadata: JSON | None = None) -> JSON:
    """A channel as the fold stores it: every key present."""
    return {"id": cid, "enabled": enabled, "metadata": metadata or {}}


def vendors(
    enabled: list[str] | None = None,
    disabled: list[str] | None = None,
    enabled_li: list[str] | None = None,
    disabled_li: list[str] | None = None,
) -> JSON:
    return {
        "enabled": enabled or [],
        "disabled": disabled or [],
        "enabled_li": enabled_li or [],
        "disabled_li": disabled_li or [],
    }


def consents(
    purposes: list[JSON] | None = None,
    vendor_lists: JSON | None = None,
    channels: list[JSON] | None = None,
) -> JSON:
    return {
        "purposes": purposes or [],
        "vendors": vendor_lists or vendors(),
        "channels": channels or [],
    }


def event(
    at: str,
    seq: int,
    given_consents: JSON | None = None,
    user: JSON | None = None,
    regulation: str = "gdpr",
) -> FoldItem:
    """A confirmed event as a fold item."""
    return FoldItem(
        at=at,
        seq=seq,
        user=user or {},
        regulation=regulation,
        consents=given_consents if given_consents is not None else {},
    )


def patch(at: str, seq: int, **user: Any) -> FoldItem:
    """A users-API profile patch as a fold item."""
    return FoldItem(at=at, seq=seq, user=user, is_patch=True)


def gdpr(state: UserState) -> JSON:
    return state.consents_for("gdpr")


# -- apply_consents: one event's consents over the current ones ------------------------------


APPLY_CONSENTS_CASES = [
    # purposes
    pytest.param(
        consents(),
        {"purposes": [{"id": "geo", "enabled": True}]},
        consents([purpose("geo", enabled=True)]),
        id="new-purpose-gets-normalized-keys",
    ),
    pytest.param(
        consents(),
        {"purposes": [{"id": "geo"}]},
        consents([purpose("geo")]),
        id="new-purpose-without-choice-is-null",
    ),
    pytest.param(
        consents([purpose("a", enabled=True)]),
        {"purposes": [{"id": "c", "enabled": False}, {"id": "b", "enabled": True}]},
        consents(
            [purpose("a", enabled=True), purpose("c", enabled=False), purpose("b", enabled=True)]
        ),
        id="new-purposes-appended-in-given-order",
    ),
    pytest.param(
        consents([purpose("a", enabled=True), purpose("b", enabled=False)]),
        {"purposes": [{"id": "b", "enabled": True}, {"id": "a", "enabled": False}]},
        consents([purpose("a", enabled=False), purpose("b", enabled=True)]),
        id="existing-purposes-keep-their-position",
    ),
    pytest.param(
        consents([purpose("geo", enabled=True)]),
        {"purposes": [{"id": "geo", "enabled": False}]},
        consents([purpose("geo", enabled=False)]),
        id="enabled-false-overwrites-true",
    ),
    pytest.param(
        consents([purpose("geo", enabled=False)]),
        {"purposes": [{"id": "geo", "enabled": True}]},
        consents([purpose("geo", enabled=True)]),
        id="enabled-true-overwrites-false",
    ),
    pytest.param(
        consents([purpose("geo", enabled=True, enabled_li=False)]),
        {"purposes": [{"id": "geo", "enabled": None, "enabled_li": None}]},
        consents([purpose("geo", enabled=True, enabled_li=False)]),
        id="null-means-no-choice",
    ),
    pytest.param(
        consents([purpose("geo", enabled=True, enabled_li=True)]),
        {"purposes": [{"id": "geo"}]},
        consents([purpose("geo", enabled=True, enabled_li=True)]),
        id="absent-means-no-choice",
    ),
    pytest.param(
        consents([purpose("geo", enabled=True, enabled_li=True)]),
        {"purposes": [{"id": "geo", "enabled_li": False}]},
        consents([purpose("geo", enabled=True, enabled_li=False)]),
        id="enabled-li-alone-leaves-enabled",
    ),
    pytest.param(
        consents([purpose("geo", enabled=False, enabled_li=True)]),
        {"purposes": [{"id": "geo", "enabled": True, "enabled_li": None}]},
        consents([purpose("geo", enabled=True, enabled_li=True)]),
        id="enabled-alone-leaves-enabled-li",
    ),
    pytest.param(
        consents(
            [
                purpose(
                    "news",
                    enabled=True,
                    values={"topics": {"value": "tech"}, "frequency": {"value": "weekly"}},
                )
            ]
        ),
        {"purposes": [{"id": "news", "values": {"topics": {"value": "travel"}}}]},
        consents(
            [
                purpose(
                    "news",
                    enabled=True,
                    values={"topics": {"value": "travel"}, "frequency": {"value": "weekly"}},
                )
            ]
        ),
        id="values-pref-replaces-only-that-preference",
    ),
    pytest.param(
        consents([purpose("news", values={"topics": {"value": "tech"}})]),
        {"purposes": [{"id": "news", "values": {"frequency": {"value": "daily"}}}]},
        consents(
            [purpose("news", values={"topics": {"value": "tech"}, "frequency": {"value": "daily"}})]
        ),
        id="values-new-preference-added",
    ),
    pytest.param(
        consents([purpose("news", values={"topics": {"value": "tech"}})]),
        {"purposes": [{"id": "news", "values": {"topics": {"value": None}}}]},
        consents([purpose("news", values={"topics": {"value": None}})]),
        id="values-pref-replaced-whole-even-with-null-value",
    ),
    pytest.param(
        consents([purpose("news", values={"topics": {"value": "tech"}})]),
        {"purposes": [{"id": "news", "values": {}}]},
        consents([purpose("news", values={"topics": {"value": "tech"}})]),
        id="values-empty-keeps-preferences",
    ),
    pytest.param(
        consents([purpose("geo", metadata={"a": 1, "nested": {"x": 1}})]),
        {"purposes": [{"id": "geo", "metadata": {"b": 2, "nested": {"y": 2}}}]},
        consents([purpose("geo", metadata={"a": 1, "b": 2, "nested": {"y": 2}})]),
        id="purpose-metadata-merges-shallowly",
    ),
    pytest.param(
        consents([purpose("geo", metadata={"a": 1})]),
        {"purposes": [{"id": "geo", "metadata": {"a": 2}}]},
        consents([purpose("geo", metadata={"a": 2})]),
        id="purpose-metadata-key-overwritten",
    ),
    pytest.param(
        consents([purpose("geo", metadata={"a": 1})]),
        {"purposes": [{"id": "geo", "metadata": {}}, {"id": "geo", "metadata": None}]},
        consents([purpose("geo", metadata={"a": 1})]),
        id="purpose-metadata-empty-or-null-keeps",
    ),
    pytest.param(
        consents(),
        {"purposes": [{"id": "geo", "enabled": True}, {"id": "geo", "enabled_li": False}]},
        consents([purpose("geo", enabled=True, enabled_li=False)]),
        id="same-purpose-twice-in-one-event-merges-once",
    ),
    # channels
    pytest.param(
        consents(),
        {"channels": [{"id": "email", "enabled": True}]},
        consents(channels=[channel("email", enabled=True)]),
        id="new-channel-gets-normalized-keys",
    ),
    pytest.param(
        consents(channels=[channel("email", enabled=True)]),
        {"channels": [{"id": "sms", "enabled": False}, {"id": "push"}]},
        consents(
            channels=[
                channel("email", enabled=True),
                channel("sms", enabled=False),
                channel("push"),
            ]
        ),
        id="new-channels-appended-in-given-order",
    ),
    pytest.param(
        consents(channels=[channel("email", enabled=True)]),
        {"channels": [{"id": "email", "enabled": False}]},
        consents(channels=[channel("email", enabled=False)]),
        id="channel-enabled-overwritten",
    ),
    pytest.param(
        consents(channels=[channel("email", enabled=True)]),
        {"channels": [{"id": "email", "enabled": None}]},
        consents(channels=[channel("email", enabled=True)]),
        id="channel-null-means-no-choice",
    ),
    pytest.param(
        consents(channels=[channel("email", metadata={"a": 1, "n": {"x": 1}})]),
        {"channels": [{"id": "email", "metadata": {"b": 2, "n": {"y": 2}}}]},
        consents(channels=[channel("email", metadata={"a": 1, "b": 2, "n": {"y": 2}})]),
        id="channel-metadata-merges-shallowly",
    ),
    pytest.param(
        consents([purpose("email", enabled=True)]),
        {"channels": [{"id": "email", "enabled": False}]},
        consents([purpose("email", enabled=True)], channels=[channel("email", enabled=False)]),
        id="channel-and-purpose-with-same-id-are-separate",
    ),
    # vendors
    pytest.param(
        consents(vendor_lists=vendors(disabled=["v1", "v2"])),
        {"vendors": {"enabled": ["v1"]}},
        consents(vendor_lists=vendors(enabled=["v1"], disabled=["v2"])),
        id="vendor-enabled-leaves-disabled",
    ),
    pytest.param(
        consents(vendor_lists=vendors(enabled=["v1", "v2", "v3"])),
        {"vendors": {"disabled": ["v2"]}},
        consents(vendor_lists=vendors(enabled=["v1", "v3"], disabled=["v2"])),
        id="vendor-disabled-leaves-enabled-order-kept",
    ),
    pytest.param(
        consents(vendor_lists=vendors(enabled=["v1"], disabled_li=["v1", "v2"])),
        {"vendors": {"enabled_li": ["v1"]}},
        consents(vendor_lists=vendors(enabled=["v1"], enabled_li=["v1"], disabled_li=["v2"])),
        id="vendor-enabled-li-leaves-disabled-li-only",
    ),
    pytest.param(
        consents(vendor_lists=vendors(disabled=["v1"], enabled_li=["v1"])),
        {"vendors": {"disabled_li": ["v1"]}},
        consents(vendor_lists=vendors(disabled=["v1"], disabled_li=["v1"])),
        id="vendor-disabled-li-leaves-enabled-li-only",
    ),
    pytest.param(
        consents(vendor_lists=vendors(enabled=["v1", "v2"])),
        {"vendors": {"enabled": ["v2", "v1"]}},
        consents(vendor_lists=vendors(enabled=["v1", "v2"])),
        id="vendor-already-enabled-no-duplicate-order-kept",
    ),
    pytest.param(
        consents(vendor_lists=vendors(enabled=["v1", "v2"])),
        {"vendors": {"enabled": ["v4", "v1", "v3"]}},
        consents(vendor_lists=vendors(enabled=["v1", "v2", "v4", "v3"])),
        id="vendor-new-ids-appended-in-given-order",
    ),
    pytest.param(
        consents(),
        {"vendors": {"disabled": ["v1", "v1", "v2", "v1"]}},
        consents(vendor_lists=vendors(disabled=["v1", "v2"])),
        id="vendor-repeated-in-one-event-listed-once",
    ),
    pytest.param(
        consents(vendor_lists=vendors(enabled=["v1"], disabled=["v2"])),
        {"vendors": {"enabled": ["v2"], "disabled": ["v1"]}},
        consents(vendor_lists=vendors(enabled=["v2"], disabled=["v1"])),
        id="vendor-swap-both-ways-in-one-event",
    ),
    pytest.param(
        consents(vendor_lists=vendors(enabled=["v1"], enabled_li=["v2"])),
        {"vendors": {"enabled": [], "disabled": None}},
        consents(vendor_lists=vendors(enabled=["v1"], enabled_li=["v2"])),
        id="vendor-empty-or-null-lists-change-nothing",
    ),
    # whole consents
    pytest.param(
        consents(
            [purpose("geo", enabled=True)],
            vendors(enabled=["v1"]),
            [channel("email", enabled=True)],
        ),
        {},
        consents(
            [purpose("geo", enabled=True)],
            vendors(enabled=["v1"]),
            [channel("email", enabled=True)],
        ),
        id="empty-event-changes-nothing",
    ),
    pytest.param(
        consents([purpose("geo", enabled=True)]),
        {"purposes": None, "vendors": None, "channels": None, "tcfcs": "CPXxRfAPXxRfAAfKABENB"},
        consents([purpose("geo", enabled=True)]),
        id="null-sections-and-tcfcs-ignored",
    ),
]


@pytest.mark.parametrize(("state", "given", "expected"), APPLY_CONSENTS_CASES)
def test_apply_consents(state: JSON, given: JSON, expected: JSON) -> None:
    assert apply_consents(state, given) == expected


@pytest.mark.parametrize(
    "given",
    [
        pytest.param({"purposes": [{"id": "geo", "enabled": True}]}, id="purpose"),
        pytest.param({"channels": [{"id": "email", "enabled": True}]}, id="channel"),
        pytest.param({"vendors": {"enabled": ["v1", "v9"]}}, id="vendor"),
    ],
)
def test_new_entries_have_normalized_key_order(given: JSON) -> None:
    result = apply_consents(empty_consents(), given)
    assert list(result) == ["purposes", "vendors", "channels"]
    assert list(result["vendors"]) == ["enabled", "disabled", "enabled_li", "disabled_li"]
    for entry in result["purposes"]:
        assert list(entry) == ["id", "enabled", "enabled_li", "metadata", "values"]
    for entry in result["channels"]:
        assert list(entry) == ["id", "enabled", "metadata"]


@pytest.mark.parametrize(
    ("state", "given"),
    [
        pytest.param(
            consents(
                [purpose("geo", True, None, {"a": 1}, {"t": {"value": "x"}})],
                vendors(enabled=["v1"], disabled=["v2"]),
                [channel("email", True, {"a": 1})],
            ),
            {
                "purposes": [
                    {"id": "geo", "enabled": False, "metadata": {"b": 2}, "values": {"t": {}}},
                    {"id": "new", "enabled": True},
                ],
                "vendors": {"enabled": ["v2"], "disabled": ["v1"]},
                "channels": [{"id": "email", "metadata": {"b": 2}}, {"id": "sms"}],
            },
            id="everything-changes",
        ),
        pytest.param(empty_consents(), {"vendors": {"enabled_li": ["v1"]}}, id="from-empty"),
    ],
)
def test_apply_consents_does_not_mutate_its_inputs(state: JSON, given: JSON) -> None:
    state_copy, given_copy = copy.deepcopy(state), copy.deepcopy(given)
    result = apply_consents(state, given)
    assert result != state
    assert state == state_copy
    assert given == given_copy


# -- apply_profile: an event's user part or a users-API patch --------------------------------


def _state(**fields: Any) -> UserState:
    return UserState(**fields)


@pytest.mark.parametrize(
    ("state", "given", "overwrite", "expected"),
    [
        pytest.param(
            _state(metadata={"a": 1, "nested": {"x": 1}}),
            {"metadata": {"b": 2, "nested": {"y": 2}}},
            False,
            _state(metadata={"a": 1, "b": 2, "nested": {"y": 2}}),
            id="metadata-merges-shallowly",
        ),
        pytest.param(
            _state(metadata={"a": 1}),
            {"metadata": {}},
            False,
            _state(metadata={"a": 1}),
            id="metadata-empty-keeps",
        ),
        pytest.param(
            _state(metadata={"a": 1}),
            {"metadata": None},
            True,
            _state(metadata={"a": 1}),
            id="metadata-null-keeps",
        ),
        pytest.param(
            _state(),
            {"organization_user_id": "jane@example.com"},
            False,
            _state(organization_user_id="jane@example.com"),
            id="ouid-set-when-none",
        ),
        pytest.param(
            _state(organization_user_id="jane@example.com"),
            {"organization_user_id": "other@example.com"},
            False,
            _state(organization_user_id="jane@example.com"),
            id="ouid-kept-when-user-has-one",
        ),
        pytest.param(
            _state(organization_user_id="jane@example.com"),
            {"organization_user_id": "other@example.com"},
            True,
            _state(organization_user_id="other@example.com"),
            id="ouid-overwritten-by-users-api-patch",
        ),
        pytest.param(
            _state(organization_user_id="jane@example.com"),
            {"organization_user_id": None},
            True,
            _state(organization_user_id="jane@example.com"),
            id="ouid-null-never-clears",
        ),
        pytest.param(
            _state(country="FR", last_seen_country="FR"),
            {"country": "DE"},
            False,
            _state(country="DE", last_seen_country="FR"),
            id="country-follows-alone",
        ),
        pytest.param(
            _state(country="FR", last_seen_country="FR"),
            {"last_seen_country": "ES"},
            False,
            _state(country="FR", last_seen_country="ES"),
            id="last-seen-country-follows-alone",
        ),
        pytest.param(
            _state(country="FR", last_seen_country="ES"),
            {"country": None, "last_seen_country": None},
            True,
            _state(country="FR", last_seen_country="ES"),
            id="countries-null-keep",
        ),
        pytest.param(
            _state(organization_user_id="a", metadata={"k": 1}, country="FR"),
            {},
            True,
            _state(organization_user_id="a", metadata={"k": 1}, country="FR"),
            id="empty-changes-nothing",
        ),
    ],
)
def test_apply_profile(state: UserState, given: JSON, overwrite: bool, expected: UserState) -> None:
    given_copy = copy.deepcopy(given)
    apply_profile(state, given, overwrite_identity=overwrite)  # in place
    assert state == expected
    assert given == given_copy


# -- fold: order, deletion, identity, regulations --------------------------------------------


# An event with no choices still gives its regulation an (empty) consents entry.
EMPTY_GDPR = {"gdpr": empty_consents()}


def _enabled(value: bool, pid: str = "geo") -> JSON:
    return {"purposes": [{"id": pid, "enabled": value}]}


FOLD_CASES = [
    pytest.param(
        "jane",
        [],
        UserState(organization_user_id="jane"),
        id="no-items-identity-only",
    ),
    pytest.param(
        None,
        [event(T2, 2, _enabled(False)), event(T1, 1, _enabled(True))],
        UserState(consents={"gdpr": consents([purpose("geo", enabled=False)])}),
        id="items-sorted-by-time-regardless-of-input-order",
    ),
    pytest.param(
        None,
        [event(T2, 1, _enabled(True)), event(T1, 2, _enabled(False))],
        UserState(consents={"gdpr": consents([purpose("geo", enabled=True)])}),
        id="older-at-imported-later-sorts-first",
    ),
    pytest.param(
        None,
        [event(T1, 2, _enabled(False)), event(T1, 1, _enabled(True))],
        UserState(consents={"gdpr": consents([purpose("geo", enabled=False)])}),
        id="same-at-ties-broken-by-seq",
    ),
    pytest.param(
        None,
        [event(T1, 3, _enabled(True)), event(T1, 2, _enabled(False))],
        UserState(consents={"gdpr": consents([purpose("geo", enabled=True)])}),
        id="same-at-higher-seq-wins",
    ),
    pytest.param(
        None,
        [
            event(T3, 1, _enabled(True, "c")),
            event(T1, 2, _enabled(True, "a")),
            event(T2, 3, _enabled(True, "b")),
        ],
        UserState(
            consents={
                "gdpr": consents(
                    [
                        purpose("a", enabled=True),
                        purpose("b", enabled=True),
                        purpose("c", enabled=True),
                    ]
                )
            }
        ),
        id="purposes-appended-in-confirmation-order",
    ),
    pytest.param(
        None,
        [
            event(T2, 2, {"vendors": {"disabled": ["v1"]}}),
            event(T1, 1, {"vendors": {"enabled": ["v1", "v2"]}}),
        ],
        UserState(consents={"gdpr": consents(vendor_lists=vendors(["v2"], ["v1"]))}),
        id="vendors-follow-confirmation-order",
    ),
    pytest.param(
        None,
        [
            event(T1, 1, user={"metadata": {"a": 1, "b": 1}}),
            event(T2, 2, user={"metadata": {"b": 2, "c": 2}}),
        ],
        UserState(metadata={"a": 1, "b": 2, "c": 2}, consents=EMPTY_GDPR),
        id="user-metadata-merges-shallowly",
    ),
    pytest.param(
        None,
        [
            event(T1, 1, user={"organization_user_id": "first"}),
            event(T2, 2, user={"organization_user_id": "second"}),
        ],
        UserState(organization_user_id="first", consents=EMPTY_GDPR),
        id="event-sets-ouid-only-when-none",
    ),
    pytest.param(
        "jane",
        [event(T1, 1, user={"organization_user_id": "other"})],
        UserState(organization_user_id="jane", consents=EMPTY_GDPR),
        id="event-never-overwrites-identity-ouid",
    ),
    pytest.param(
        "jane",
        [
            patch(T1, 1, organization_user_id="janet"),
            event(T2, 2, user={"organization_user_id": "jane"}),
        ],
        UserState(organization_user_id="janet", consents=EMPTY_GDPR),
        id="patch-overwrites-ouid-then-event-does-not",
    ),
    pytest.param(
        "jane",
        [
            event(T1, 1, user={"country": "FR", "last_seen_country": "FR"}),
            event(T2, 2, user={"country": None, "last_seen_country": "ES"}),
            event(T3, 3, user={"last_seen_country": None}),
        ],
        UserState(
            organization_user_id="jane",
            country="FR",
            last_seen_country="ES",
            consents=EMPTY_GDPR,
        ),
        id="countries-follow-when-given-not-null",
    ),
    pytest.param(
        None,
        [
            patch(T1, 1, metadata={"a": 1}, country="FR"),
            event(T2, 2, _enabled(True), user={"metadata": {"b": 2}, "country": "DE"}),
            patch(T3, 3, metadata={"a": 3}),
        ],
        UserState(
            metadata={"a": 3, "b": 2},
            country="DE",
            consents={"gdpr": consents([purpose("geo", enabled=True)])},
        ),
        id="patches-and-events-interleave-by-time",
    ),
    pytest.param(
        None,
        [patch(T1, 1, metadata={"a": 1})],
        UserState(metadata={"a": 1}),
        id="patch-touches-no-regulation",
    ),
    pytest.param(
        None,
        [
            event(T1, 1, _enabled(True)),
            event(T2, 2, _enabled(False), regulation="cpra"),
        ],
        UserState(
            consents={
                "gdpr": consents([purpose("geo", enabled=True)]),
                "cpra": consents([purpose("geo", enabled=False)]),
            }
        ),
        id="cpra-event-does-not-touch-gdpr",
    ),
    pytest.param(
        None,
        [event(T1, 1, _enabled(True), user={"metadata": {"src": "cpra"}}, regulation="cpra")],
        UserState(
            metadata={"src": "cpra"},
            consents={"cpra": consents([purpose("geo", enabled=True)])},
        ),
        id="cpra-event-still-updates-the-profile",
    ),
]


@pytest.mark.parametrize(("identity", "items", "expected"), FOLD_CASES)
def test_fold(identity: str | None, items: list[FoldItem], expected: UserState) -> None:
    assert fold(identity, items) == expected


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([], id="no-items"),
        pytest.param([event(T1, 1, _enabled(True), regulation="cpra")], id="other-regulation"),
    ],
)
def test_consents_for_unknown_regulation_is_empty(items: list[FoldItem]) -> None:
    state = fold(None, items)
    assert gdpr(state) == empty_consents()
    assert state.consents_for("lgpd") == {
        "purposes": [],
        "vendors": {"enabled": [], "disabled": [], "enabled_li": [], "disabled_li": []},
        "channels": [],
    }


CONFIRMED = [
    event(
        T1,
        1,
        {
            "purposes": [{"id": "geo", "enabled": True, "values": {"t": {"value": "a"}}}],
            "vendors": {"enabled": ["v1"]},
        },
        user={"organization_user_id": "jane", "metadata": {"a": 1}, "country": "FR"},
    ),
    event(
        T2,
        2,
        {
            "purposes": [{"id": "geo", "enabled": False}, {"id": "ads", "enabled_li": True}],
            "vendors": {"disabled": ["v1"]},
            "channels": [{"id": "email", "enabled": True}],
        },
        user={"metadata": {"a": 2, "b": 2}, "last_seen_country": "ES"},
    ),
    patch(T3, 3, organization_user_id="janet", metadata={"c": 3}),
    event(
        T4,
        4,
        {"purposes": [{"id": "geo", "values": {"t": {"value": "b"}}}]},
        user={"country": "DE"},
        regulation="cpra",
    ),
]


@pytest.mark.parametrize(
    ("deleted", "expected"),
    [
        pytest.param(
            0,
            UserState(
                organization_user_id="janet",
                metadata={"a": 2, "b": 2, "c": 3},
                country="DE",
                last_seen_country="ES",
                consents={
                    "gdpr": consents(
                        [purpose("geo", enabled=False), purpose("ads", enabled_li=True)],
                        vendors(disabled=["v1"]),
                        [channel("email", enabled=True)],
                    ),
                    "cpra": consents([purpose("geo", values={"t": {"value": "b"}})]),
                },
            ),
            id="first-event",
        ),
        pytest.param(
            1,
            UserState(
                organization_user_id="janet",
                metadata={"a": 1, "c": 3},
                country="DE",
                consents={
                    "gdpr": consents(
                        [purpose("geo", enabled=True, values={"t": {"value": "a"}})],
                        vendors(enabled=["v1"]),
                    ),
                    "cpra": consents([purpose("geo", values={"t": {"value": "b"}})]),
                },
            ),
            id="middle-event",
        ),
        pytest.param(
            3,
            UserState(
                organization_user_id="janet",
                metadata={"a": 2, "b": 2, "c": 3},
                country="FR",
                last_seen_country="ES",
                consents={
                    "gdpr": consents(
                        [
                            purpose("geo", enabled=False, values={"t": {"value": "a"}}),
                            purpose("ads", enabled_li=True),
                        ],
                        vendors(disabled=["v1"]),
                        [channel("email", enabled=True)],
                    ),
                },
            ),
            id="last-event-other-regulation",
        ),
    ],
)
def test_deletion_is_as_if_the_event_never_existed(deleted: int, expected: UserState) -> None:
    remaining = [item for position, item in enumerate(CONFIRMED) if position != deleted]
    after_deletion = fold(None, remaining)
    assert after_deletion == expected
    # Re-seq'd as if it had never been acknowledged: same state.
    never_existed = [
        FoldItem(
            at=item.at,
            seq=seq,
            user=item.user,
            regulation=item.regulation,
            consents=item.consents,
            is_patch=item.is_patch,
        )
        for seq, item in enumerate(remaining, start=1)
    ]
    assert fold(None, never_existed) == after_deletion
    assert fold(None, CONFIRMED) != after_deletion


PENDING_CHOICES = event(
    T2,
    9,
    {"purposes": [{"id": "geo", "enabled": False}], "vendors": {"enabled": ["v7"]}},
    user={"organization_user_id": "other", "metadata": {"p": 1}, "country": "IT"},
)


@pytest.mark.parametrize(
    ("identity", "history", "expected"),
    [
        pytest.param(
            "jane",
            [("pending_approval", PENDING_CHOICES)],
            UserState(organization_user_id="jane"),
            id="user-created-by-pending-event-gets-identity-only",
        ),
        pytest.param(
            None,
            [("pending_approval", PENDING_CHOICES)],
            UserState(),
            id="user-created-by-pending-event-without-ouid",
        ),
        pytest.param(
            "jane",
            [
                ("confirmed", event(T1, 1, _enabled(True), user={"metadata": {"a": 1}})),
                ("pending_approval", PENDING_CHOICES),
            ],
            UserState(
                organization_user_id="jane",
                metadata={"a": 1},
                consents={"gdpr": consents([purpose("geo", enabled=True)])},
            ),
            id="pending-beside-confirmed-changes-nothing",
        ),
    ],
)
def test_pending_events_are_not_applied(
    identity: str | None, history: list[tuple[str, FoldItem]], expected: UserState
) -> None:
    confirmed = [item for status, item in history if status == "confirmed"]
    state = fold(identity, confirmed)
    assert state == expected
    assert "v7" not in gdpr(state)["vendors"]["enabled"]


@pytest.mark.parametrize(
    "items",
    [
        pytest.param(CONFIRMED, id="confirmed-history"),
        pytest.param(list(reversed(CONFIRMED)), id="reversed-input"),
        pytest.param([event(T1, 1, _enabled(True)), event(T1, 1, _enabled(True))], id="repeat"),
    ],
)
def test_fold_is_pure(items: list[FoldItem]) -> None:
    snapshot = copy.deepcopy(items)
    order = [id(item) for item in items]
    first = fold("jane", items)
    second = fold("jane", items)
    assert first == second
    assert items == snapshot
    assert [id(item) for item in items] == order  # the input list is not sorted in place
    for item, before in zip(items, snapshot, strict=True):
        assert item.user == before.user
        assert item.consents == before.consents


# -- user_view -------------------------------------------------------------------------------


VIEW_STATE = UserState(
    organization_user_id="jane",
    metadata={"a": 1},
    country=None,
    last_seen_country="FR",
    consents={
        "gdpr": consents([purpose("geo", enabled=True)], vendors(enabled=["v1"])),
        "cpra": consents(channels=[channel("email", enabled=False)]),
    },
)


@pytest.mark.parametrize(
    ("regulation", "expected_consents"),
    [
        pytest.param(
            "gdpr", consents([purpose("geo", enabled=True)], vendors(enabled=["v1"])), id="gdpr"
        ),
        pytest.param("cpra", consents(channels=[channel("email", enabled=False)]), id="cpra"),
        pytest.param("lgpd", empty_consents(), id="unknown-regulation-empty"),
    ],
)
def test_user_view(regulation: str, expected_consents: JSON) -> None:
    view = user_view(
        user_id="u1",
        organization_id="acme",
        state=VIEW_STATE,
        regulation=regulation,
        version=3,
        created_at=T1,
        updated_at=T2,
    )
    assert view == {
        "id": "u1",
        "organization_id": "acme",
        "organization_user_id": "jane",
        "version": 3,
        "created_at": T1,
        "updated_at": T2,
        "metadata": {"a": 1},
        "country": None,
        "last_seen_country": "FR",
        "consents": expected_consents,
    }
    assert list(view) == [
        "id",
        "organization_id",
        "organization_user_id",
        "version",
        "created_at",
        "updated_at",
        "metadata",
        "country",
        "last_seen_country",
        "consents",
    ]


@pytest.mark.parametrize("regulation", ["gdpr", "cpra"])
def test_user_view_consents_are_a_copy(regulation: str) -> None:
    state = copy.deepcopy(VIEW_STATE)
    view = user_view(
        user_id="u1",
        organization_id="acme",
        state=state,
        regulation=regulation,
        version=1,
        created_at=T1,
        updated_at=T1,
    )
    view["consents"]["purposes"].append(purpose("x"))
    view["consents"]["vendors"]["disabled"].append("v9")
    view["consents"]["channels"].clear()
    assert state == VIEW_STATE
