"""Flatten option: the seed's example comes out exactly, and every list/object rule holds."""

from __future__ import annotations

from typing import Any

import pytest

from consent_relay.domain.flatten import flatten_body

P = "parameters__entity__"

SEED_EVENT: dict[str, Any] = {
    "type": "event.created",
    "parameters": {
        "entity": {
            "organization_id": "didomi",
            "user": {"id": "some_unique_id", "organization_user_id": "[email protected]"},
            "consents": {
                "purposes": [
                    {"id": "geo_location", "enabled": True},
                    {"id": "market_research", "enabled": True},
                ]
            },
        }
    },
}

SEED_FLAT: dict[str, Any] = {
    "type": "event.created",
    "parameters__entity__organization_id": "didomi",
    "parameters__entity__user__id": "some_unique_id",
    "parameters__entity__user__organization_user_id": "[email protected]",
    "parameters__entity__consents__purposes__geo_location__enabled": True,
    "parameters__entity__consents__purposes__market_research__enabled": True,
}


def test_seed_example_comes_out_exactly() -> None:
    flat = flatten_body(SEED_EVENT)
    assert flat == SEED_FLAT
    assert list(flat) == list(SEED_FLAT)


def test_input_is_not_mutated() -> None:
    body: dict[str, Any] = {"type": "t", "parameters": {"entity": {"l": [{"id": "a", "x": 1}]}}}
    flatten_body(body)
    assert body == {"type": "t", "parameters": {"entity": {"l": [{"id": "a", "x": 1}]}}}


def _entity(entity: Any) -> dict[str, Any]:
    return {"type": "user.created", "parameters": {"entity": entity}}


@pytest.mark.parametrize(
    ("entity", "expected"),
    [
        pytest.param({"a": 1, "b": "x"}, {P + "a": 1, P + "b": "x"}, id="scalars"),
        pytest.param({"a": {"b": {"c": False}}}, {P + "a__b__c": False}, id="nested-objects"),
        pytest.param({"a": None}, {P + "a": None}, id="null-stays"),
        pytest.param({"a": {}, "b": 1}, {P + "b": 1}, id="empty-object-left-out"),
        pytest.param({"a": {"b": {}}}, {}, id="object-of-empty-objects-left-out"),
        pytest.param({"a": []}, {P + "a": []}, id="empty-list-stays"),
        pytest.param({"a": [1, "x", None, True]}, {P + "a": [1, "x", None, True]}, id="scalars"),
        pytest.param(
            {"p": [{"id": "geo", "enabled": True}, {"id": "ads", "enabled": False}]},
            {P + "p__geo__enabled": True, P + "p__ads__enabled": False},
            id="list-with-ids-keyed-by-id",
        ),
        pytest.param(
            {"p": [{"id": "Geo Location-v2.1", "on": 1}]},
            {P + "p__Geo Location-v2.1__on": 1},
            id="id-copied-verbatim",
        ),
        pytest.param(
            {"p": [{"id": 7, "on": 1}, {"id": 8, "on": 0}]},
            {P + "p__7__on": 1, P + "p__8__on": 0},
            id="integer-ids",
        ),
        pytest.param({"p": [{"id": "only"}]}, {}, id="id-only-item-is-empty"),
        pytest.param(
            {"p": [{"id": "a", "v": None}]}, {P + "p__a__v": None}, id="null-inside-id-item"
        ),
        pytest.param(
            {"p": [{"id": "a", "v": 1}, {"v": 2}]},
            {P + "p__0__id": "a", P + "p__0__v": 1, P + "p__1__v": 2},
            id="not-all-have-id-keyed-by-index",
        ),
        pytest.param(
            {"p": [{"v": 1}, {"v": 2}]},
            {P + "p__0__v": 1, P + "p__1__v": 2},
            id="objects-without-id-keyed-by-index",
        ),
        pytest.param(
            {"p": [1, {"v": 2}, [3, 4], {}]},
            {P + "p__0": 1, P + "p__1__v": 2, P + "p__2": [3, 4]},
            id="mixed-list-keyed-by-index",
        ),
        pytest.param(
            {"p": [[{"id": "a", "v": 1}], []]},
            {P + "p__0__a__v": 1, P + "p__1": []},
            id="list-of-lists",
        ),
        pytest.param(
            {"p": [{"id": "a", "v": 1}, {"id": "a", "v": 2}]},
            {P + "p__0__id": "a", P + "p__0__v": 1, P + "p__1__id": "a", P + "p__1__v": 2},
            id="duplicate-ids-keyed-by-index",
        ),
        pytest.param(
            {"p": [{"id": None, "v": 1}]},
            {P + "p__0__id": None, P + "p__0__v": 1},
            id="null-id-keyed-by-index",
        ),
        pytest.param({}, {}, id="empty-entity"),
    ],
)
def test_flatten_rules(entity: dict[str, Any], expected: dict[str, Any]) -> None:
    assert flatten_body(_entity(entity)) == {"type": "user.created", **expected}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"type": "user.deleted"}, {"type": "user.deleted"}, id="no-parameters"),
        pytest.param(
            {"type": "user.deleted", "parameters": {}},
            {"type": "user.deleted"},
            id="empty-parameters",
        ),
        pytest.param(
            {"type": "user.deleted", "parameters": {"entity": None}},
            {"type": "user.deleted", "parameters__entity": None},
            id="null-entity",
        ),
        pytest.param(
            {"type": "user.created", "parameters": {"entity": {"id": "u1"}}, "regulation": "ccpa"},
            {"type": "user.created", "regulation": "ccpa", P + "id": "u1"},
            id="regulation-kept-top-level",
        ),
    ],
)
def test_body_shapes(body: dict[str, Any], expected: dict[str, Any]) -> None:
    flat = flatten_body(body)
    assert flat == expected
    assert list(flat) == list(expected)


@pytest.mark.parametrize("message_type", ["user.updated", "event.updated"])
def test_update_keeps_new_entity_drops_source_and_old_entity(message_type: str) -> None:
    body: dict[str, Any] = {
        "type": message_type,
        "parameters": {
            "source": {"id": "evt_1", "created_at": "2019-08-07T10:45:11Z"},
            "old_entity": {"id": "u1", "organization_user_id": "old@x", "gone": 1},
            "new_entity": {
                "id": "u1",
                "organization_user_id": "new@x",
                "consents": {"purposes": [{"id": "cookies", "enabled": False}]},
            },
        },
    }
    assert flatten_body(body) == {
        "type": message_type,
        P + "id": "u1",
        P + "organization_user_id": "new@x",
        P + "consents__purposes__cookies__enabled": False,
    }


def test_item_in_id_list_with_nested_objects_and_lists() -> None:
    body: dict[str, Any] = _entity(
        {
            "purposes": [
                {
                    "id": "analytics",
                    "enabled": True,
                    "meta": {"id": "inner", "source": {"kind": "banner", "extra": {}}},
                    "tags": ["a", "b"],
                    "empty": [],
                    "channels": [{"id": "email", "on": True}, {"id": "sms", "on": None}],
                    "history": [{"at": 1}, {"at": 2}],
                }
            ]
        }
    )
    prefix = P + "purposes__analytics__"
    assert flatten_body(body) == {
        "type": "user.created",
        prefix + "enabled": True,
        prefix + "meta__id": "inner",
        prefix + "meta__source__kind": "banner",
        prefix + "tags": ["a", "b"],
        prefix + "empty": [],
        prefix + "channels__email__on": True,
        prefix + "channels__sms__on": None,
        prefix + "history__0__at": 1,
        prefix + "history__1__at": 2,
    }
