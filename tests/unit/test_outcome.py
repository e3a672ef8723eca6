"""Whatever a receiver or a token endpoint sends is made storable (delivery.outcome)."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from consent_relay.delivery import http1, oauth, outcome, sender
from consent_relay.delivery.oauth import TokenError
from consent_relay.settings import Settings

R = outcome.REPLACEMENT


def is_storable(text: str) -> bool:
    """What every database of ours takes: UTF-8 with no NUL (orjson refuses surrogates)."""
    return "\x00" not in text and orjson.loads(orjson.dumps(text)) == text


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("", ""),
        ("plain ascii", "plain ascii"),
        ("déjà vu, 東京, emoji 🎉", "déjà vu, 東京, emoji 🎉"),  # valid text kept as it is
        ("\x00", R),
        ("a\x00b\x00", f"a{R}b{R}"),
        ("é\x00", f"é{R}"),  # NUL in non-ASCII text
        ("\x01\x1f\x7f\t\r\n", "\x01\x1f\x7f\t\r\n"),  # other controls are storable
        ("\ud800", R),  # a lone high surrogate
        ("x\udfffy", f"x{R}y"),  # a lone low surrogate
        ("\udcff\udc80", R + R),  # surrogate-escaped bytes (aiohttp's header decoding)
        ("ok \udcc3\x00 ok", f"ok {R}{R} ok"),
        (R, R),
    ],
)
def test_storable(given: str, stored: str) -> None:
    assert outcome.storable(given) == stored
    assert is_storable(outcome.storable(given))


def test_storable_returns_ordinary_text_itself() -> None:
    """The hot path: no copy of an ordinary body."""
    for body in ("x" * 4096, "é" * 2048):
        assert outcome.storable(body) is body


@pytest.mark.parametrize(
    ("raw", "text", "nbytes"),
    [
        (b"", "", 0),
        (b"ok", "ok", 2),
        (b"a\x00b", f"a{R}b", 3),
        (b"\xff\xfe", R + R, 2),  # invalid UTF-8
        (b"\xed\xa0\x80", R * 3, 3),  # an encoded surrogate is invalid UTF-8
        (b"caf\xc3\xa9", "café", 5),
        (b"caf\xc3", f"caf{R}", 4),  # cut inside a character
        (b"x" * 5000, "x" * outcome.MAX_KEPT_BODY, 5000),  # at most 4 KiB kept, size told
        (b"\x00" * 5000, R * outcome.MAX_KEPT_BODY, 5000),
    ],
)
def test_keep_body(raw: bytes, text: str, nbytes: int) -> None:
    assert outcome.keep_body(raw) == (text, nbytes)
    assert is_storable(outcome.keep_body(raw)[0])


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionResetError("reset by peer"), "ConnectionResetError: reset by peer"),
        (ValueError("bad status line 'HTTP/1.1 500 \x00\udcff'"), None),
        (aiohttp.http_exceptions.BadStatusLine("HTTP/1.1 500 Oops\x00 \udce9"), None),
        (aiohttp.ClientPayloadError("Oops\udce9\x00"), None),
    ],
)
def test_classify_makes_exception_text_storable(exc: Exception, expected: str | None) -> None:
    code, description = sender.classify(exc)
    assert code == outcome.E_CONNECTION
    assert is_storable(description)
    if expected is not None:
        assert description == expected


@pytest.mark.parametrize(
    ("status", "raw", "body"),
    [
        (500, b"boom\x00", f"boom{R}"),
        (500, b"\xff\xfe\xfd", R * 3),
        (200, b"\x00not json", f"{R}not json"),
        (200, b'{"access_token": "t", "token_type": "\\u0000mac"}', None),
        (200, b'{"access_token": "t", "token_type": "\xffmac"}', None),
    ],
)
def test_token_endpoint_answers_are_made_storable(
    status: int, raw: bytes, body: str | None
) -> None:
    with pytest.raises(TokenError) as caught:
        oauth.parse_token(status, raw)
    error = caught.value
    assert error.body is not None
    assert is_storable(error.body)
    assert is_storable(error.message)
    assert error.body_bytes == len(raw)
    if body is not None:
        assert error.body == body


def test_token_error_made_elsewhere_is_storable_too() -> None:
    error = TokenError("unsupported token_type '\udcff\x00'", 200, "a\x00", 2)
    assert is_storable(error.message)
    assert error.body == f"a{R}"


@pytest.mark.parametrize(
    ("changes", "direct"),
    [
        ({}, True),
        ({"delivery_client": "aiohttp"}, False),
        ({"egress_proxy": "http://proxy.example:3128"}, False),  # only aiohttp speaks to it
        ({"egress_source_address": "127.0.0.1"}, True),
    ],
)
async def test_which_client_posts(changes: dict[str, str], direct: bool) -> None:
    pool = sender.make_pool(Settings().model_copy(update=changes), limit=4)
    assert isinstance(pool, http1.Pool) is direct
    if pool is not None:
        assert pool.local_addr == (("127.0.0.1", 0) if changes else None)
        await pool.close()
