"""The direct client (``delivery.http1``, asyncio and llhttp) against aiohttp, its reference.

Every answer a receiver can give, byte for byte from a raw server, comes to the same
``Outcome`` through both (code, status, kept body, body size, Retry-After): the worker may
send through either (``CONSENT_RELAY_DELIVERY_CLIENT``) and nothing a receiver sees or we
record may depend on which. Then what only the direct client does itself: the request on
the wire, keep-alive and when a connection is not reused, a kept connection that ends
unanswered (sent again on a new one, where aiohttp fails), the SSRF guard on every address,
TLS, the bound on an answer's head, and a header value that would split the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from consent_relay.delivery import http1, outcome, sender
from consent_relay.delivery.outcome import Outcome
from consent_relay.settings import Settings
from tests.e2e.helpers import eventually

BIG = b"b" * 10_000
CRLF = b"\r\n"


def answer(status: str, headers: list[str], body: bytes = b"") -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    return head.encode() + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@dataclass(frozen=True)
class Script:
    """What the raw server does with a request: send ``reply``, then close if ``close``."""

    reply: bytes
    close: bool = False
    reset: bool = False
    # For every request after a connection's first: send this, then close (None: as the first).
    later: bytes | None = None


SCRIPTS: dict[str, Script] = {
    "/ok": Script(answer("200 OK", ["Content-Length: 5"], b"hello")),
    "/no-content": Script(answer("204 No Content", [])),
    "/created-empty": Script(answer("201 Created", ["Content-Length: 0"])),
    "/chunked": Script(
        answer("200 OK", ["Transfer-Encoding: chunked"], chunked(b"abc", b"de" * 100, b"f"))
    ),
    "/until-close": Script(answer("200 OK", ["Connection: close"], b"to the end"), close=True),
    "/http10": Script(b"HTTP/1.0 200 OK\r\n\r\nold style", close=True),
    "/busy": Script(answer("503 Service Unavailable", ["Retry-After: 120", "Content-Length: 0"])),
    "/slow-down": Script(
        answer(
            "429 Too Many Requests",
            ["Retry-After: Wed, 21 Oct 2037 07:28:00 GMT", "Content-Length: 4"],
            b"wait",
        )
    ),
    "/retry-after-on-500": Script(
        answer("500 Oops", ["Retry-After: 9", "Content-Length: 2"], b"no")
    ),
    "/continue": Script(
        answer("100 Continue", []) + answer("200 OK", ["Content-Length: 2"], b"ok")
    ),
    "/early-hints": Script(
        answer("103 Early Hints", ["Link: </s.css>; rel=preload"])
        + answer("202 Accepted", ["Content-Length: 3"], b"yes")
    ),
    "/big-declared": Script(answer("200 OK", [f"Content-Length: {len(BIG)}"], BIG)),
    "/big-chunked": Script(answer("200 OK", ["Transfer-Encoding: chunked"], chunked(BIG))),
    "/big-until-close": Script(answer("200 OK", ["Connection: close"], BIG), close=True),
    "/exactly-kept": Script(
        answer("200 OK", [f"Content-Length: {outcome.MAX_KEPT_BODY}"], b"k" * 4096)
    ),
    "/odd-bytes": Script(answer("400 Bad", ["Content-Length: 6"], b"a\x00b\xff\xfec")),
    "/redirect": Script(
        answer("301 Moved", ["Location: http://127.0.0.1:1/", "Content-Length: 0"])
    ),
    "/gone": Script(answer("410 Gone", ["Content-Length: 4"], b"gone")),
    "/garbage": Script(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", close=True),
    "/silent-close": Script(b"", close=True),
    "/reset": Script(b"", reset=True),
    "/half-head": Script(b"HTTP/1.1 200 OK\r\nContent-Le", close=True),
    "/short-body": Script(answer("200 OK", ["Content-Length: 100"], b"only fifty" * 5), close=True),
    "/two-lengths": Script(answer("200 OK", ["Content-Length: 2", "Content-Length: 3"], b"abc")),
    "/bad-chunk": Script(answer("200 OK", ["Transfer-Encoding: chunked"], b"zz\r\nabc\r\n")),
    "/huge-head": Script(
        answer("200 OK", [f"X-Filler-{n}: {'f' * 1000}" for n in range(80)] + ["Content-Length: 0"])
    ),
    "/long-line": Script(answer("200 OK", ["X-Long: " + "l" * 8185, "Content-Length: 0"])),
    "/long-enough": Script(answer("200 OK", ["X-Long: " + "l" * 8184, "Content-Length: 0"])),
    "/long-reason": Script(answer("200 " + "r" * 8191, ["Content-Length: 0"])),
    "/many-headers": Script(
        answer("200 OK", [f"X-{n}: v" for n in range(128)] + ["Content-Length: 0"])
    ),
    "/too-many-headers": Script(
        answer("200 OK", [f"X-{n}: v" for n in range(129)] + ["Content-Length: 0"])
    ),
}


# Not in SCRIPTS: whether the next POST finds the connection ended depends on which of the
# loop's callbacks comes first (as with aiohttp): test_an_idle_connection_the_receiver_closed.
HANGUP = Script(answer("200 OK", ["Content-Length: 2"], b"ok"), close=True)
# Not in SCRIPTS: a receiver whose idle timeout ends a kept connection just as the next
# request comes in (the race, made certain), unanswered or with an answer cut short. aiohttp
# does not send a POST again on a new connection; the direct client does when nothing of an
# answer came (http1.py says why): test_a_kept_connection_ended_unanswered_is_left_for_a_new_one.
FIRST_ONLY = Script(answer("200 OK", ["Content-Length: 2"], b"ok"), later=b"")
# The same after an answer without a length (204, the commonest a webhook gets): the ended
# connection once passed for an answer ended by the connection's close, the last answer's.
FIRST_204_ONLY = Script(answer("204 No Content", []), later=b"")
FIRST_THEN_HALF = Script(
    answer("200 OK", ["Content-Length: 2"], b"ok"), later=b"HTTP/1.1 200 OK\r\nContent-Le"
)
FIRST_THEN_100 = Script(
    answer("200 OK", ["Content-Length: 2"], b"ok"), later=answer("100 Continue", [])
)
# Not in SCRIPTS either: aiohttp takes a head of 300 KB (its bounds allow 1 MiB); the direct
# client's own bound, MAX_HEAD, is 256 KiB (http1.py says why).
OVER_HEAD = Script(
    answer("200 OK", [f"X-Filler-{n}: {'f' * 3000}" for n in range(100)] + ["Content-Length: 0"])
)


OTHERS = {
    "/hangup": HANGUP,
    "/over-head": OVER_HEAD,
    "/first-only": FIRST_ONLY,
    "/first-204-only": FIRST_204_ONLY,
    "/first-then-half": FIRST_THEN_HALF,
    "/first-then-100": FIRST_THEN_100,
}


@dataclass
class Seen:
    connection: int
    head: bytes
    body: bytes


@dataclass
class RawServer:
    """Reads each request whole (head, then Content-Length bytes), answers its path's script."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(CRLF):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.seen.append(Seen(number, head, body))
                path = head.split(b" ", 2)[1].decode()
                script = {**SCRIPTS, **OTHERS}.get(
                    path.split("?")[0], Script(answer("404 No", ["Content-Length: 0"]))
                )
                served += 1
                if served > 1 and script.later is not None:
                    writer.write(script.later)
                    await writer.drain()
                    break
                if script.reset:
                    writer.transport.abort()
                    return
                writer.write(script.reply)
                await writer.drain()
                if script.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Closed with every connection it holds, each handler ended."""
        assert self._server is not None
        self._server.close()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


SETTINGS = Settings(allowed_networks=["127.0.0.0/8", "::1/128"], connect_timeout=2.0)
HEADERS = {"Content-Type": "application/json", "User-Agent": sender.USER_AGENT, "X-Tenant": "a"}
BODY = b'{"type":"user.updated","parameters":{}}'


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with RawServer() as raw:
        yield raw


@pytest.fixture
async def clients() -> AsyncIterator[tuple[aiohttp.ClientSession, http1.Pool]]:
    session = sender.make_session(SETTINGS, limit=10)
    pool = sender.make_pool(SETTINGS, limit=10)
    assert pool is not None
    try:
        yield session, pool
    finally:
        await session.close()
        await pool.close()


def comparable(result: Outcome) -> tuple[object, ...]:
    """What is recorded of an outcome, but its wording and timing."""
    return (
        result.code,
        result.status_code,
        result.response_body,
        result.response_bytes,
        result.retry_after,
    )


@pytest.mark.parametrize("path", sorted(SCRIPTS))
async def test_both_clients_come_to_the_same_outcome(
    path: str, server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    session, pool = clients
    url = server.url(path)
    reference = await sender.send(session, url, BODY, HEADERS, deadline=5)
    direct = await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)
    assert comparable(direct) == comparable(reference), (direct, reference)
    # and again on what the direct client kept of its connection, if anything
    again = await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)
    assert comparable(again) == comparable(reference)


@pytest.mark.parametrize("first", sorted(SCRIPTS))
async def test_every_answer_after_every_answer_comes_to_the_same_outcome(
    first: str, server: RawServer
) -> None:
    """Each answer after each other one, through each client on its own connections: the
    second request goes on the connection the first left, if either kept it. What the last
    answer left in a kept connection must not decide the next one's outcome (a kept
    connection ended unanswered after a 204 once passed for an answer, the 204 again)."""
    for second in sorted(SCRIPTS):
        outcomes = []
        for direct in (False, True):
            session = sender.make_session(SETTINGS, limit=10)
            pool = sender.make_pool(SETTINGS, limit=10) if direct else None
            try:
                for path in (first, second):
                    result = await sender.send(
                        session, server.url(path), BODY, HEADERS, deadline=5, pool=pool
                    )
                outcomes.append(comparable(result))
            finally:
                await session.close()
                if pool is not None:
                    await pool.close()
        reference, through_direct = outcomes
        assert through_direct == reference, (first, second, through_direct, reference)


EXPECTED: dict[str, tuple[str, int | None, int | None]] = {
    # a few outcomes spelled out, so that the two clients cannot agree on a wrong one
    "/ok": (outcome.OK, 200, 5),
    "/continue": (outcome.OK, 200, 2),
    "/early-hints": (outcome.OK, 202, 3),
    "/big-declared": (outcome.OK, 200, len(BIG)),
    "/big-chunked": (outcome.OK, 200, None),
    "/busy": (outcome.E_HTTP, 503, 0),
    "/redirect": (outcome.E_HTTP, 301, 0),
    "/garbage": (outcome.E_CONNECTION, None, None),
    "/reset": (outcome.E_CONNECTION, None, None),
    "/short-body": (outcome.E_CONNECTION, None, None),
    "/huge-head": (outcome.OK, 200, 0),
    "/long-enough": (outcome.OK, 200, 0),
    "/long-line": (outcome.E_CONNECTION, None, None),
    "/too-many-headers": (outcome.E_CONNECTION, None, None),
}


@pytest.mark.parametrize("path", sorted(EXPECTED))
async def test_the_direct_clients_outcomes(
    path: str, server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    session, pool = clients
    result = await sender.send(session, server.url(path), BODY, HEADERS, deadline=5, pool=pool)
    assert (result.code, result.status_code, result.response_bytes) == EXPECTED[path]
    if path == "/busy":
        assert result.retry_after == "120"
    if path == "/big-declared":
        assert result.response_body == "b" * outcome.MAX_KEPT_BODY


async def test_an_answers_head_is_bounded_in_all(
    server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    session, pool = clients
    url = server.url("/over-head")
    result = await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)
    assert result.code == outcome.E_CONNECTION
    assert f"over {http1.MAX_HEAD} bytes" in (result.error or "")
    assert (await sender.send(session, url, BODY, HEADERS, deadline=5)).ok  # aiohttp's 1 MiB


async def test_the_request_on_the_wire(
    server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    session, pool = clients
    url = server.url("/ok?a=1&b=%20x", host="localhost")
    await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)
    [seen] = server.seen
    lines = seen.head.decode().split("\r\n")
    assert lines[0] == "POST /ok?a=1&b=%20x HTTP/1.1"
    assert lines[1] == f"Host: localhost:{server.port}"
    assert set(lines[2:-2]) == {
        "Content-Type: application/json",
        f"User-Agent: {sender.USER_AGENT}",
        "X-Tenant: a",
        f"Content-Length: {len(BODY)}",
    }
    assert lines[-2:] == ["", ""]
    assert seen.body == BODY


async def test_connections_are_kept_and_reused_and_closed_when_they_must_be(
    server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    session, pool = clients

    async def post(path: str) -> Outcome:
        return await sender.send(session, server.url(path), BODY, HEADERS, deadline=5, pool=pool)

    for _ in range(3):
        assert (await post("/ok")).ok
    assert [s.connection for s in server.seen] == [1, 1, 1]  # one connection, kept
    assert (await post("/until-close")).ok  # the answer said close: a new one next
    assert (await post("/ok")).ok
    assert (await post("/big-declared")).ok  # a body left unread: not reused
    assert (await post("/ok")).ok
    assert (await post("/garbage")).code == outcome.E_CONNECTION
    assert (await post("/ok")).ok
    assert [s.connection for s in server.seen] == [1, 1, 1, 1, 2, 2, 3, 3, 4]
    # Many at once: as many connections, all kept for the next round (limit 10).
    await asyncio.gather(*(post("/ok") for _ in range(8)))
    before = server.connections
    await asyncio.gather(*(post("/ok") for _ in range(8)))
    assert server.connections == before


async def test_an_idle_connection_the_receiver_closed_is_not_used(
    server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    """A receiver's idle timeout: it answers as if it kept the connection, then ends it."""
    session, pool = clients
    result = await sender.send(session, server.url("/hangup"), BODY, HEADERS, deadline=5, pool=pool)
    assert result.ok

    async def let_go() -> bool:  # kept until the receiver's end arrives
        return pool.idle == 0

    await eventually(let_go, within=5, interval=0.01, what="the ended connection let go")
    result = await sender.send(session, server.url("/ok"), BODY, HEADERS, deadline=5, pool=pool)
    assert result.ok
    assert [s.connection for s in server.seen] == [1, 2]


@pytest.mark.parametrize(("path", "status"), [("/first-only", 200), ("/first-204-only", 204)])
async def test_a_kept_connection_ended_unanswered_is_left_for_a_new_one(
    path: str, status: int, server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    """The receiver reads the request on the kept connection and ends it without a byte of
    an answer: the same request, once more, on a new connection; one outcome, the new
    connection's answer (never the last answer on the ended one, taken for this one's)."""
    session, pool = clients
    url = server.url(path)
    assert (await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)).ok
    result = await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)
    assert (result.code, result.status_code) == (outcome.OK, status)
    assert [s.connection for s in server.seen] == [1, 1, 2]  # answered by the new one
    assert [s.body for s in server.seen] == [BODY] * 3
    assert [s.head for s in server.seen[1:]] == [server.seen[0].head] * 2
    # aiohttp, the reference, does not send a POST again: a failed attempt there.
    assert (await sender.send(session, url, BODY, HEADERS, deadline=5)).ok
    failed = await sender.send(session, url, BODY, HEADERS, deadline=5)
    assert failed.code == outcome.E_CONNECTION
    assert len(server.seen) == 5


@pytest.mark.parametrize("path", ["/first-then-half", "/first-then-100"])
async def test_a_kept_connection_ended_after_part_of_an_answer_is_a_failed_attempt(
    path: str, server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    """Something of an answer came (the receiver was answering this request): not sent
    again, whatever came."""
    session, pool = clients
    url = server.url(path)
    assert (await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)).ok
    result = await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)
    assert result.code == outcome.E_CONNECTION
    assert [s.connection for s in server.seen] == [1, 1]


async def test_a_new_connection_ended_unanswered_is_a_failed_attempt(
    server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    """Only a kept connection is left for another: a new one that ends unanswered is the
    receiver's answer to this request, and then so is the new connection after a kept one."""
    session, pool = clients
    result = await sender.send(
        session, server.url("/silent-close"), BODY, HEADERS, deadline=5, pool=pool
    )
    assert result.code == outcome.E_CONNECTION
    assert len(server.seen) == 1
    # A kept connection, then a new one that ends unanswered too: tried twice, not more.
    assert (await sender.send(session, server.url("/ok"), BODY, HEADERS, deadline=5, pool=pool)).ok
    result = await sender.send(
        session, server.url("/silent-close"), BODY, HEADERS, deadline=5, pool=pool
    )
    assert result.code == outcome.E_CONNECTION
    assert [s.connection for s in server.seen] == [1, 2, 2, 3]


async def test_a_header_value_that_would_split_the_request_is_refused(
    server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    """An OAuth token comes from the token server's JSON: it may hold anything."""
    session, pool = clients
    for value in ("t0ken\r\nX-Injected: 1", "t0ken\nGET / HTTP/1.1", "t0\rken", "nul\x00"):
        headers = {**HEADERS, "Authorization": f"Bearer {value}"}
        direct = await sender.send(session, server.url("/ok"), BODY, headers, deadline=5, pool=pool)
        reference = await sender.send(session, server.url("/ok"), BODY, headers, deadline=5)
        assert direct.code == outcome.E_CONNECTION, direct
        assert "CR, LF or NUL" in (direct.error or "")
        assert reference.code == outcome.E_CONNECTION, reference
    assert server.seen == []  # nothing was sent


async def test_every_address_is_checked_and_refusals_are_their_own_outcome(
    server: RawServer,
) -> None:
    pool = http1.Pool(limit=4, allowed=[], connect_timeout=2)
    session = sender.make_session(Settings(), limit=4)
    try:
        for url in (server.url("/ok", host="localhost"), server.url("/ok")):
            result = await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)
            assert result.code == outcome.E_FORBIDDEN_TARGET, (url, result)
        unknown = "http://no-such-host.invalid/hook"
        result = await sender.send(session, unknown, BODY, HEADERS, deadline=5, pool=pool)
        assert result.code == outcome.E_DNS, result
        reference = await sender.send(session, unknown, BODY, HEADERS, deadline=5)
        assert reference.code == outcome.E_DNS
    finally:
        await pool.close()
        await session.close()
    assert server.seen == []


async def test_a_refused_connection_and_a_deadline(
    server: RawServer, clients: tuple[aiohttp.ClientSession, http1.Pool]
) -> None:
    session, pool = clients
    with contextlib.closing(__import__("socket").socket()) as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    refused = f"http://127.0.0.1:{closed_port}/hook"
    for client in (None, pool):
        result = await sender.send(session, refused, BODY, HEADERS, deadline=5, pool=client)
        assert result.code == outcome.E_CONNECTION, result
    # A receiver that reads and never answers: the deadline ends the attempt and the
    # connection (the direct client keeps none it did not finish with).
    never = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        await never.wait()
        writer.close()

    hanging = await asyncio.start_server(hold, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{hanging.sockets[0].getsockname()[1]}/hang"
    try:
        result = await sender.send(session, url, BODY, HEADERS, deadline=0.3, pool=pool)
        assert result.code == outcome.E_TIMEOUT
        assert 250 <= result.duration_ms < 3000
        assert pool.idle == 0
    finally:
        never.set()
        hanging.close()
        await hanging.wait_closed()


class TwoAddresses(AbstractResolver):
    """``dual.test`` resolves to a blackhole first, then to the receiver."""

    def __init__(self, first: str, second: str) -> None:
        self.first, self.second = first, second

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
            for address in (self.first, self.second)
        ]

    async def close(self) -> None:
        return None


async def test_an_address_that_never_answers_leaves_the_next_its_turn(server: RawServer) -> None:
    """A name with two addresses, the first a route to nowhere (a listener on 127.0.0.2
    whose accept queue is full: the SYN is dropped, the connect hangs): the second address
    is tried 0.25 s later, as aiohttp's connector does ("happy eyeballs"), not once the
    first has had its share of the connect timeout, and the POST goes through it."""
    blackhole = socket.socket()
    fillers: list[socket.socket] = []
    pool = http1.Pool(
        limit=4,
        allowed=_nets(SETTINGS.allowed_networks),
        connect_timeout=10.0,
        resolver=TwoAddresses("127.0.0.2", "127.0.0.1"),
    )
    session = sender.make_session(SETTINGS, limit=4)
    try:
        blackhole.bind(("127.0.0.2", server.port))
        blackhole.listen(0)
        for _ in range(3):  # the accept queue full, and never accepted
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.2", server.port))
            fillers.append(filler)
        url = f"http://dual.test:{server.port}/ok"
        result = await sender.send(session, url, BODY, HEADERS, deadline=20, pool=pool)
        assert result.ok, result
        # The second address started after 0.25 s; an equal share would be 5 s.
        assert 250 <= result.duration_ms < 2500
    finally:
        for sock in (*fillers, blackhole):
            sock.close()
        await pool.close()
        await session.close()


async def test_a_name_without_addresses_is_a_dns_failure(server: RawServer) -> None:
    class Nothing(TwoAddresses):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            return []

    pool = http1.Pool(limit=4, resolver=Nothing("", ""))
    session = sender.make_session(SETTINGS, limit=4)
    try:
        url = f"http://dual.test:{server.port}/ok"
        result = await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pool)
        assert result.code == outcome.E_DNS, result
    finally:
        await pool.close()
        await session.close()


# -- TLS --------------------------------------------------------------------------------------


def _certificate(tmp: Path, names: list[str]) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextlib.asynccontextmanager
async def tls_server(cert: Path, key: Path) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(CRLF)[0])
            await reader.readexactly(length)
            writer.write(answer("200 OK", ["Content-Length: 6"], b"secure"))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_tls_is_verified_against_the_trust_store_and_the_host_name(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, ["localhost", "127.0.0.1"])
    trusting = ssl.create_default_context(cafile=str(cert))
    allowed = SETTINGS.allowed_networks
    session = sender.make_session(SETTINGS, limit=4)
    async with tls_server(cert, key) as port:
        pools = {
            "trusting": http1.Pool(limit=4, allowed=_nets(allowed), ssl_context=trusting),
            "system": http1.Pool(limit=4, allowed=_nets(allowed)),
        }
        try:

            async def post(which: str, host: str) -> Outcome:
                url = f"https://{host}:{port}/hook"
                return await sender.send(session, url, BODY, HEADERS, deadline=5, pool=pools[which])

            assert (await post("trusting", "localhost")).response_body == "secure"
            assert (await post("trusting", "127.0.0.1")).ok
            # Not in the system's trust store: refused, as aiohttp refuses it.
            untrusted = await post("system", "localhost")
            assert untrusted.code == outcome.E_TLS, untrusted
            reference = await sender.send(
                session, f"https://localhost:{port}/hook", BODY, HEADERS, deadline=5
            )
            assert reference.code == outcome.E_TLS
        finally:
            for pool in pools.values():
                await pool.close()
            await session.close()


async def test_tls_names_the_certificate_must_carry(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, ["receiver.example"])
    trusting = ssl.create_default_context(cafile=str(cert))
    pool = http1.Pool(limit=4, allowed=_nets(SETTINGS.allowed_networks), ssl_context=trusting)
    session = sender.make_session(SETTINGS, limit=4)
    try:
        async with tls_server(cert, key) as port:
            result = await sender.send(
                session, f"https://localhost:{port}/hook", BODY, HEADERS, deadline=5, pool=pool
            )
        assert result.code == outcome.E_TLS, result
        assert "hostname" in (result.error or "").lower() or "match" in (result.error or "")
    finally:
        await pool.close()
        await session.close()


def _nets(cidrs: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(c) for c in cidrs]
