"""Oversized request bodies against a real uvicorn server: clients that send the whole body
before reading (urllib, a raw socket) read the 413, with Content-Length and chunked bodies;
a body past the drain bound, a stalled one and one behind ``Expect: 100-continue`` are
answered and the connection closed without reading on and on."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from consent_relay import crypto
from consent_relay.api.app import create_app
from consent_relay.api.limits import BodyLimit
from consent_relay.settings import Settings

MiB = 1024 * 1024
BIG = 12 * MiB  # past the kernel's socket buffers (a reset used to lose the 413), within the drain
EVENTS = "/v1/consents/events"


def _serve(app: ASGIApp, http: str) -> Iterator[int]:
    """``app`` on a free port of 127.0.0.1, in a thread, as ``consent-relay serve`` runs it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    loop = "uvloop" if http == "httptools" else "asyncio"
    config = uvicorn.Config(app, http=http, loop=loop, log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server thread died"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module", params=["httptools", "h11"])
def relay(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """The whole API (default 1 MiB limit), served by uvicorn with each HTTP parser."""
    data_dir: Path = tmp_path_factory.mktemp("body-limit") / "data"
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'relay.db'}",
        admin_token="body-limit-admin",
        secret_key=crypto.new_key(),
    )
    yield from _serve(create_app(settings), str(request.param))


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def impatient() -> Iterator[int]:
    """A 1 KiB limit whose drain gives up after half a second."""
    yield from _serve(BodyLimit(_ok, max_bytes=1024, drain_seconds=0.5), "httptools")


def _assert_413(status: int, content_type: str, body: bytes) -> None:
    assert status == 413
    assert content_type == "application/problem+json"
    problem = orjson.loads(body)
    assert problem["status"] == 413
    assert "1024 KiB" in problem["detail"]


# -- urllib -----------------------------------------------------------------------------------


def _urllib_post(port: int, data: bytes | Iterator[bytes]) -> urllib.error.HTTPError:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{EVENTS}", data=data, method="POST")
    request.add_header("Authorization", "Bearer crk_whatever")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    return refused.value


def test_urllib_reads_the_413_of_a_content_length_body(relay: int) -> None:
    refused = _urllib_post(relay, b"x" * BIG)
    _assert_413(refused.code, refused.headers["Content-Type"], refused.read())


def test_urllib_reads_the_413_of_a_chunked_body(relay: int) -> None:
    chunks = (b"y" * (256 * 1024) for _ in range(BIG // (256 * 1024)))
    refused = _urllib_post(relay, chunks)  # an iterable without a length goes chunked
    _assert_413(refused.code, refused.headers["Content-Type"], refused.read())


# -- a raw socket -----------------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(length: int | None, *extra: str) -> bytes:
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    lines = [f"POST {EVENTS} HTTP/1.1", "Host: relay.test", framing, *extra, "", ""]
    return "\r\n".join(lines).encode()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-cased names) and its Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside the response body"
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length]


def _chunked(total: int, size: int = 256 * 1024) -> bytes:
    piece = f"{size:x}\r\n".encode() + b"z" * size + b"\r\n"
    return piece * (total // size) + b"0\r\n\r\n"


@pytest.mark.parametrize("connection", ["close", "keep-alive"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_raw_socket_that_sends_everything_first_reads_the_413(
    relay: int, framing: str, connection: str
) -> None:
    head = _head(None if framing == "chunked" else BIG, f"Connection: {connection}")
    body = _chunked(BIG) if framing == "chunked" else b"x" * BIG
    with _connect(relay) as sock:
        sock.sendall(head + body)  # all of it, before reading a byte
        status, headers, answer = _read_response(sock)
        _assert_413(status, headers["content-type"], answer)
        if connection == "keep-alive":
            # The body was read whole: the connection serves the next request.
            assert headers.get("connection") != "close"
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay.test\r\n\r\n")
            status, _headers, answer = _read_response(sock)
            assert (status, orjson.loads(answer)) == (200, {"status": "ok"})


def _send_until_cut_off(sock: socket.socket, head: bytes, piece: bytes, most: int) -> int:
    """Send ``head`` then ``piece`` again and again, up to ``most`` bytes; how many bytes went
    out before the server cut the connection (fails if it never does)."""
    sent = 0
    try:
        sock.sendall(head)
        while sent < most:
            sock.sendall(piece)
            sent += len(piece)
    except (ConnectionResetError, BrokenPipeError):
        return sent
    raise AssertionError(f"the server read all {sent} bytes and kept the connection open")


def test_a_declared_length_past_the_drain_bound_is_refused_without_reading(relay: int) -> None:
    with _connect(relay) as sock:
        sent = _send_until_cut_off(sock, _head(1024 * MiB), b"x" * MiB, 256 * MiB)
    # Nothing was drained: only what the kernel's buffers held went out.
    assert sent < 16 * MiB


def test_a_chunked_body_past_the_drain_bound_is_cut_off(relay: int) -> None:
    piece = f"{MiB:x}\r\n".encode() + b"z" * MiB + b"\r\n"
    with _connect(relay) as sock:
        sent = _send_until_cut_off(sock, _head(None), piece, 256 * MiB)
    # Read up to the 16 MiB drain bound, then closed (plus what the socket buffers held).
    assert 16 * MiB <= sent < 64 * MiB


def test_a_body_that_waits_for_100_continue_is_refused_at_once(relay: int) -> None:
    with _connect(relay) as sock:
        sock.sendall(_head(BIG, "Expect: 100-continue"))
        status, headers, body = _read_response(sock)
    _assert_413(status, headers["content-type"], body)  # not "100 Continue"
    assert headers["connection"] == "close"


def test_a_stalled_body_is_answered_when_the_drain_time_runs_out(impatient: int) -> None:
    with _connect(impatient) as sock:
        sock.sendall(_head(4096) + b"x" * 2048)  # over the limit, then nothing more
        started = time.monotonic()
        status, headers, _body = _read_response(sock)
        waited = time.monotonic() - started
        assert sock.recv(1) == b""  # and the connection is closed
    assert status == 413
    assert headers["connection"] == "close"
    assert 0.4 < waited < 5
