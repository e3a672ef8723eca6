"""Hostile bytes in answers, end to end, on SQLite and PostgreSQL: receivers and OAuth token
endpoints answering NUL, invalid UTF-8 and encoded surrogates, in a body, a status line or a
header (tests/e2e/odd_bytes_server.py), beside a healthy webhook whose deliveries share the
worker's batches with theirs.

Once, on PostgreSQL, one NUL in one 500's body made the database refuse the batch of attempts
it was recorded with: nothing of the batch was recorded and every delivery of it went out
again when its lease ran out (one message 11 times in 4 minutes with 0 attempts recorded,
the healthy webhook's 5 times). Here every hostile delivery gets exactly its 6 attempts
(1 + 5 retries), each recorded, then a dead letter; the healthy webhook gets each message
exactly once. Short leases (2.5 s) make any resend show up within the test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from consent_relay.delivery import outcome, sender
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from tests.e2e.helpers import consent_event, eventually, make_webhook, post_event, read, running
from tests.e2e.oauth_peers import oauth
from tests.e2e.odd_bytes_server import OddBytesServer, response
from tests.receiver import Receiver

USERS = 3
ATTEMPTS = 6  # 1 + the 5 retries of the shortened schedule (tests/conftest.py)
R = outcome.REPLACEMENT
NUL_BODY = b"boom\x00\x00 at \x00"
BAD_UTF8_BODY = b"\xff\xfe bad \xc3( utf-8 \xed\xa0\x80 surrogate"
HUGE = 5 * 2**30  # a declared body size beyond 32 bits
DECLARED = {"/huge-declared": HUGE}  # the size recorded where it is not the body's own

# path -> the raw answer, and what each of its attempts must come to: (code, status, body)
RECEIVERS: dict[str, tuple[bytes, tuple[str, int | None, str | None]]] = {
    "/nul-body": (
        response(b"500 Internal Server Error", NUL_BODY),
        (outcome.E_HTTP, 500, f"boom{R}{R} at {R}"),
    ),
    "/bad-utf8-body": (
        response(b"500 Oops", BAD_UTF8_BODY),
        (outcome.E_HTTP, 500, f"{R}{R} bad {R}( utf-8 {R}{R}{R} surrogate"),
    ),
    "/odd-reason": (response(b"500 Bad \x80\xff Reason", b"\x00"), (outcome.E_HTTP, 500, R)),
    "/nul-reason": (response(b"500 Bad\x00Reason", b"x"), (outcome.E_HTTP, 500, "x")),
    # aiohttp hands the Retry-After over surrogate-escaped: "\udcff\udcfe1\udc80"
    "/odd-retry-after": (
        response(b"503 Busy", b"", b"Retry-After: \xff\xfe1\x80\r\n"),
        (outcome.E_HTTP, 503, ""),
    ),
    "/nul-header": (
        response(b"500 Oops", b"y", b"X-Debug: a\x00b\r\n"),
        (outcome.E_CONNECTION, None, None),
    ),
    "/bad-status-line": (b"HTTP/1.1 5\xff0 Oops\x00\r\n\r\n", (outcome.E_CONNECTION, None, None)),
    # A body cut after 4 KiB keeps the size the receiver declares, whatever it declares.
    "/huge-declared": (
        b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % HUGE + b"x" * 5000,
        (outcome.E_HTTP, 500, "x" * outcome.MAX_KEPT_BODY),
    ),
}
TOKEN_ENDPOINTS: dict[str, tuple[bytes, tuple[str, int | None, str | None]]] = {
    "/token-nul": (
        response(b"500 Oops", b"token\x00error"),
        (outcome.E_AUTH, 500, f"token{R}error"),
    ),
    "/token-bad-utf8": (
        response(
            b"200 OK", b"\xff\xfe not json \xed\xa0\x80", b"Content-Type: application/json\r\n"
        ),
        (outcome.E_AUTH, 200, f"{R}{R} not json {R}{R}{R}"),
    ),
    "/token-odd-type": (
        response(b"200 OK", b'{"access_token": "t", "token_type": "b\\u0000d"}'),
        (outcome.E_AUTH, 200, '{"access_token": "t", "token_type": "b\\u0000d"}'),
    ),
    "/token-odd-reason": (response(b"401 No\x00 \xff way", b"\x00"), (outcome.E_AUTH, 401, R)),
}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The lease's floor is 2 request timeouts + the connect timeout: 2.5 s.
    return settings.model_copy(
        update={"request_timeout": 1.0, "connect_timeout": 0.5, "lease_seconds": 1.0}
    )


@pytest.fixture
async def odd() -> AsyncIterator[OddBytesServer]:
    answers = {path: raw for path, (raw, _expect) in {**RECEIVERS, **TOKEN_ENDPOINTS}.items()}
    async with OddBytesServer(answers) as server:
        yield server


def storable(text: str | None) -> bool:
    """What every database of ours takes: UTF-8 (orjson refuses surrogates), no NUL."""
    return text is None or ("\x00" not in text and orjson.loads(orjson.dumps(text)) == text)


async def hook_attempts(ctx: Context, webhook_id: str) -> list[dict[str, Any]]:
    return await read(ctx, inspect.deliveries_with_attempts, webhook_id)


async def count(ctx: Context, webhook_id: str, status: str) -> int:
    return await read(ctx, inspect.count, "deliveries", webhook_id=webhook_id, status=status)


async def test_hostile_bytes_are_recorded_and_never_resent(
    api: httpx.AsyncClient, ctx: Context, odd: OddBytesServer, receiver: Receiver
) -> None:
    healthy = await make_webhook(api, receiver.url("/healthy"))
    only_events = {"event_types": ["event.created"]}  # one delivery per user
    hostile = {
        path: (await make_webhook(api, odd.url(path), **only_events))["id"] for path in RECEIVERS
    }
    for path in TOKEN_ENDPOINTS:
        hook = await make_webhook(
            api, odd.url("/never-reached"), authentication=oauth(odd.url(path)), **only_events
        )
        hostile[path] = hook["id"]
    for n in range(USERS):
        await post_event(api, consent_event(f"user{n}@example.com", "ads", True))
    healthy_expected = 2 * USERS  # event.created and user.created

    async def settled() -> bool:
        for hook_id in hostile.values():
            if await count(ctx, hook_id, "dead") < USERS:
                return False
        return await count(ctx, healthy["id"], "delivered") == healthy_expected

    async with running(ctx):
        await eventually(settled, within=60, interval=0.1, what="dead letters and deliveries")

    # The healthy webhook: each message exactly once.
    sent = Counter(r.headers["webhook-id"] for r in receiver.at("/healthy"))
    assert len(sent) == healthy_expected
    assert set(sent.values()) == {1}, sent

    wrong: list[str] = []  # every broken expectation, reported together
    for path, (_raw, (code, status, body)) in {**RECEIVERS, **TOKEN_ENDPOINTS}.items():
        found = await hook_attempts(ctx, hostile[path])
        per_delivery = Counter(a["delivery_id"] for a in found)
        if len(per_delivery) != USERS or set(per_delivery.values()) != {ATTEMPTS}:
            wrong.append(f"{path}: attempts per delivery {dict(per_delivery)}")
        numbers = {a["attempt_number"] for a in found}
        if numbers != set(range(1, ATTEMPTS + 1)):
            wrong.append(f"{path}: attempt numbers {numbers}")
        states = {(a["status"], a["attempt_count"]) for a in found}
        if states != {("dead", ATTEMPTS)}:
            wrong.append(f"{path}: deliveries {states}")
        if odd.hits[path] != ATTEMPTS * USERS:  # no attempt was made and then forgotten
            wrong.append(f"{path}: {odd.hits[path]} requests, not {ATTEMPTS * USERS}")
        got = {(a["outcome"], a["status_code"], a["response_body"]) for a in found}
        if got != {(code, status, body)}:
            wrong.append(f"{path}: outcomes {got}, expected {(code, status, body)}")
        if not all(storable(a["response_body"]) and storable(a["error"]) for a in found):
            wrong.append(f"{path}: unstorable text was stored: {found[0]}")
        size = DECLARED.get(path, len(_raw) - _raw.index(b"\r\n\r\n") - 4)
        sizes = {a["response_bytes"] for a in found}
        if body is not None and sizes != {size}:
            wrong.append(f"{path}: response_bytes {sizes}, expected {size}")
    assert not wrong, "\n".join(wrong)
    assert odd.hits["/never-reached"] == 0  # no token, no delivery

    # The API shows the attempts, with the body's size as it was sent.
    [first, *_] = await hook_attempts(ctx, hostile["/nul-body"])
    shown = await api.get(f"/v1/deliveries/{first['delivery_id']}")
    assert shown.status_code == 200, shown.text
    views = shown.json()["attempts"]
    assert len(views) == ATTEMPTS
    assert {(v["response_body"], v["response_bytes"]) for v in views} == {
        (f"boom{R}{R} at {R}", len(NUL_BODY))
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # no database involved
@pytest.mark.parametrize(
    ("answer", "size"),
    [
        (response(b"200 OK", b"x" * 5000), 5000),  # cut after 4 KiB: the declared size
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 5000, None),  # undeclared
        (response(b"200 OK", b"x" * 4096), 4096),  # read to its end: exact
    ],
)
async def test_a_body_cut_at_4_kib_keeps_the_size_it_declared(
    settings: Settings, answer: bytes, size: int | None
) -> None:
    async with OddBytesServer({"/long": answer}) as server:
        session = sender.make_session(settings, limit=1)
        try:
            result = await sender.send(session, server.url("/long"), b"{}", {}, deadline=2.0)
        finally:
            await session.close()
    assert (result.code, result.response_body) == (outcome.OK, "x" * outcome.MAX_KEPT_BODY)
    assert result.response_bytes == size
