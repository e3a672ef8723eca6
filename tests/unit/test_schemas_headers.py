"""Custom header rules (``header_rules``, ``schemas._check_headers`` and the Authorization
rule on WebhookIn / WebhookPatch / OAuthIn), table-driven."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from consent_relay.header_rules import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    check_authorization_header,
    header_problems,
)
from consent_relay.schemas import OAuthIn, WebhookIn, WebhookPatch

URL = "https://hooks.example.com/h"
OAUTH = {"token_url": "https://auth.example.com/t", "client_id": "c", "client_secret": "s"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Env": "prod"},
        {"Authorization": "Bearer static-token"},  # allowed without OAuth
        {"X-Api-Key": "a b c ~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}"},  # visible ASCII and spaces
        {"!#$%&'*+-.^_`|~09azAZ": ""},  # every token character; an empty value
        {f"X-{i}": "v" for i in range(MAX_HEADERS)},
        {"X-Big": "v" * (MAX_HEADER_BYTES - len("X-Big"))},  # exactly at the byte limit
        {"Content-Language": "fr", "X-Webhook-Env": "prod", "Proxied-By": "x"},
    ],
)
def test_headers_that_are_fine(headers: dict[str, str]) -> None:
    assert header_problems(headers) == []
    assert WebhookIn(url=URL, headers=headers).headers == headers


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({"X-A\n": "v"}, "not a valid header name"),  # `$` would match before the newline
        ({"X A": "v"}, "not a valid header name"),
        ({"": "v"}, "not a valid header name"),
        ({"X-É": "v"}, "not a valid header name"),
        ({"X:A": "v"}, "not a valid header name"),
        ({"X-A": "a\r\nInjected: yes"}, "invalid value"),
        ({"X-A": "a\nb"}, "invalid value"),
        ({"X-A": "tab\there"}, "invalid value"),
        ({"X-A": "bell\x07"}, "invalid value"),
        ({"X-A": "del\x7f"}, "invalid value"),
        ({"X-A": "caf\u00e9"}, "invalid value"),
        ({"X-A": "\x00"}, "invalid value"),
        ({"Connection": "close"}, "hop-by-hop"),
        ({"keep-alive": "timeout=5"}, "hop-by-hop"),
        ({"TE": "trailers"}, "hop-by-hop"),
        ({"Trailer": "X-A"}, "hop-by-hop"),
        ({"Transfer-Encoding": "chunked"}, "hop-by-hop"),
        ({"Upgrade": "h2c"}, "hop-by-hop"),
        ({"Proxy-Authorization": "Basic x"}, "hop-by-hop"),
        ({"Proxy-Connection": "keep-alive"}, "hop-by-hop"),
        ({"Content-Length": "0"}, "frames the body"),
        ({"Content-Encoding": "gzip"}, "frames the body"),
        ({"content-type": "text/plain"}, "frames the body"),
        ({"Content-Range": "bytes 0-1/2"}, "frames the body"),
        ({"Host": "internal"}, "where or how"),
        ({"Expect": "100-continue"}, "where or how"),
        ({"User-Agent": "me"}, "set by Consent Relay"),
        ({"Cookie": "a=b"}, "set by Consent Relay"),
        ({"webhook-id": "x"}, "set by Consent Relay"),
        ({"Webhook-Signature": "x"}, "set by Consent Relay"),
        ({"WEBHOOK-ANYTHING-NEW": "x"}, "set by Consent Relay"),
        ({"X-A": "1", "x-a": "2"}, "listed twice"),
        ({f"X-{i}": "v" for i in range(MAX_HEADERS + 1)}, f"at most {MAX_HEADERS} headers"),
        ({"X-Big": "v" * (MAX_HEADER_BYTES - len("X-Big") + 1)}, f"at most {MAX_HEADER_BYTES}"),
        ({f"X-{i}": "v" * 4096 for i in range(50)}, "at most"),  # 50 headers of 4 KiB
    ],
)
def test_headers_that_are_refused(headers: dict[str, str], says: str) -> None:
    problems = header_problems(headers)
    assert any(says in problem for problem in problems), problems
    with pytest.raises(ValidationError) as caught:
        WebhookIn(url=URL, headers=headers)
    [error] = caught.value.errors()
    assert error["loc"][0] == "headers"
    with pytest.raises(ValidationError):
        OAuthIn(**OAUTH, token_request_headers=headers)


@pytest.mark.parametrize(
    ("headers", "has_oauth", "refused"),
    [
        ({"Authorization": "Bearer x"}, False, False),
        ({"Authorization": "Bearer x"}, True, True),
        ({"authorization": "Bearer x"}, True, True),
        ({"X-Other": "x"}, True, False),
        ({}, True, False),
    ],
)
def test_check_authorization_header(
    headers: dict[str, str], has_oauth: bool, refused: bool
) -> None:
    if refused:
        with pytest.raises(ValueError, match="OAuth"):
            check_authorization_header(headers, has_oauth)
    else:
        check_authorization_header(headers, has_oauth)


@pytest.mark.parametrize(
    ("model", "payload", "refused"),
    [
        (WebhookIn, {"url": URL, "headers": {"Authorization": "Bearer x"}}, False),
        (WebhookIn, {"url": URL, "headers": {"Authorization": "x"}, "authentication": OAUTH}, True),
        (WebhookIn, {"url": URL, "headers": {"X-A": "x"}, "authentication": OAUTH}, False),
        (WebhookPatch, {"headers": {"Authorization": "x"}}, False),
        (WebhookPatch, {"headers": {"Authorization": "x"}, "authentication": OAUTH}, True),
        (WebhookPatch, {"headers": {"Authorization": "x"}, "authentication": None}, False),
        (WebhookPatch, {"authentication": OAUTH}, False),
    ],
)
def test_authorization_is_refused_with_oauth_only(
    model: type[WebhookIn | WebhookPatch], payload: dict[str, Any], refused: bool
) -> None:
    if not refused:
        model.model_validate(payload)
        return
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    [error] = caught.value.errors()
    assert error["loc"] == ("headers",)
    assert "OAuth" in error["msg"]


@pytest.mark.parametrize(
    ("method", "refused"), [("client_secret_basic", True), ("client_secret_post", False)]
)
def test_token_request_authorization_is_refused_with_basic_auth(method: str, refused: bool) -> None:
    payload = {
        **OAUTH,
        "client_auth_method": method,
        "token_request_headers": {"Authorization": "x"},
    }
    if not refused:
        OAuthIn.model_validate(payload)
        return
    with pytest.raises(ValidationError) as caught:
        OAuthIn.model_validate(payload)
    assert caught.value.errors()[0]["loc"] == ("token_request_headers",)
