"""Rendered bodies: exact bytes for every combination of the flatten and regulation options."""

from __future__ import annotations

from typing import Any

import pytest

from consent_relay.domain.payloads import include_regulation_for, render_body

PARAMS: dict[str, Any] = {"entity": {"id": "u1", "purposes": [{"id": "geo", "enabled": True}]}}


@pytest.mark.parametrize(
    ("flatten", "include_regulation", "expected"),
    [
        pytest.param(
            False,
            False,
            b'{"type":"user.created","parameters":'
            b'{"entity":{"id":"u1","purposes":[{"id":"geo","enabled":true}]}}}',
            id="plain",
        ),
        pytest.param(
            False,
            True,
            b'{"type":"user.created","parameters":'
            b'{"entity":{"id":"u1","purposes":[{"id":"geo","enabled":true}]}},'
            b'"regulation":"cpra"}',
            id="plain-with-regulation",
        ),
        pytest.param(
            True,
            False,
            b'{"type":"user.created","parameters__entity__id":"u1",'
            b'"parameters__entity__purposes__geo__enabled":true}',
            id="flat",
        ),
        pytest.param(
            True,
            True,
            b'{"type":"user.created","regulation":"cpra","parameters__entity__id":"u1",'
            b'"parameters__entity__purposes__geo__enabled":true}',
            id="flat-with-regulation",
        ),
    ],
)
def test_render_body(flatten: bool, include_regulation: bool, expected: bytes) -> None:
    body = render_body(
        "user.created", PARAMS, "cpra", flatten=flatten, include_regulation=include_regulation
    )
    assert body == expected


def test_render_body_is_utf8_and_leaves_parameters_untouched() -> None:
    params: dict[str, Any] = {"entity": {"name": "Zoë ✓"}}
    body = render_body("user.created", params, "gdpr", flatten=True, include_regulation=False)
    assert body == '{"type":"user.created","parameters__entity__name":"Zoë ✓"}'.encode()
    assert params == {"entity": {"name": "Zoë ✓"}}


@pytest.mark.parametrize(
    ("regulations", "expected"),
    [
        pytest.param([], False, id="none"),
        pytest.param(["gdpr"], False, id="gdpr-only"),
        pytest.param(["gdpr", "gdpr"], False, id="gdpr-twice"),
        pytest.param(["cpra"], True, id="other-only"),
        pytest.param(["gdpr", "cpra"], True, id="gdpr-and-other"),
    ],
)
def test_include_regulation_for(regulations: list[str], expected: bool) -> None:
    assert include_regulation_for(regulations) is expected
