"""Real peers for the OAuth, egress and secrets tests: a counting token endpoint (aiohttp), the
oauth2-mock-server (node) and tinyproxy as subprocesses, and small worker/database helpers.

Everything listens on 127.0.0.0/8 only; every subprocess is stopped (SIGTERM, then SIGKILL)
and reaped when its context ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from aiohttp import web

from consent_relay.runtime import Context
from consent_relay.storage import inspect
from tests.receiver import Behaviour, Received
from tests.workers import make_webhook as make_webhook  # re-exported
from tests.workers import running as running  # re-exported

TOOLS = Path(__file__).resolve().parents[1] / "tools"
OAUTH_SERVER_SCRIPT = TOOLS / "oauth-server.mjs"
TINYPROXY = "/usr/bin/tinyproxy"


# -- waiting --------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 20, what: str = "condition"
) -> None:
    """Poll ``check`` every 20 ms until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


# -- the service ----------------------------------------------------------------------------


def with_settings(ctx: Context, **updates: Any) -> Context:
    """The same database, key, clock and wake-up event; other settings (e.g. a worker that
    allows less)."""
    return dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=updates))


async def post_events(api: httpx.AsyncClient, *users: str) -> None:
    """One consent event per user (each user is its own delivery queue)."""
    for user in users:
        response = await api.post(
            "/v1/consents/events",
            json={
                "user": {"organization_user_id": user},
                "consents": {"purposes": [{"id": "analytics", "enabled": True}]},
            },
        )
        assert response.status_code == 201, response.text


def oauth(token_url: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "oauth2_client_credentials",
        "token_url": token_url,
        "client_id": "relay",
        "client_secret": "s3cret",
        **fields,
    }


@dataclass
class AttemptRow:
    delivery_id: str
    attempt_number: int
    outcome: str
    status_code: int | None
    response_body: str | None
    error: str | None
    request_headers: dict[str, str] | None


async def attempts(ctx: Context) -> list[AttemptRow]:
    """Every recorded attempt, oldest first."""
    async with ctx.store.read() as tx:
        found = await inspect.rows(tx, "attempts")
    return [
        AttemptRow(
            r["delivery_id"],
            r["attempt_number"],
            r["outcome"],
            r["status_code"],
            r["response_body"],
            r["error"],
            orjson.loads(r["request_headers"]) if r["request_headers"] else None,
        )
        for r in found
    ]


async def wait_attempts(ctx: Context, count: int, within: float = 20) -> list[AttemptRow]:
    """Until at least ``count`` attempts are recorded; returns them all."""
    found: list[AttemptRow] = []

    async def enough() -> bool:
        nonlocal found
        found = await attempts(ctx)
        return len(found) >= count

    await eventually(enough, within=within, what=f"{count} recorded attempts")
    return found


async def delivery_statuses(ctx: Context) -> list[str]:
    async with ctx.store.read() as tx:
        return [r["status"] for r in await inspect.rows(tx, "deliveries")]


# -- receiver behaviours --------------------------------------------------------------------


def bearer(item: Received) -> str | None:
    value = item.headers.get("Authorization", "")
    return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None


def accept_tokens(*accepted: str) -> Behaviour:
    """204 for a request bearing one of these tokens, 401 otherwise."""

    def behave(item: Received, _count: int) -> web.StreamResponse:
        if bearer(item) in accepted:
            return web.Response(status=204)
        return web.Response(status=401, text="invalid token")

    return behave


# -- a counting token endpoint --------------------------------------------------------------


@dataclass
class TokenRequest:
    form: dict[str, str]
    headers: dict[str, str]
    peer: str


TokenAnswer = Callable[[TokenRequest, int], web.Response]


def issue(prefix: str = "tok", expires_in: float = 3600) -> TokenAnswer:
    """Answer request ``n`` (from 0) with the token ``{prefix}-{n + 1}``."""

    def answer(_request: TokenRequest, n: int) -> web.Response:
        return web.json_response(
            {"access_token": f"{prefix}-{n + 1}", "token_type": "Bearer", "expires_in": expires_in}
        )

    return answer


@dataclass
class TokenEndpoint:
    """An OAuth token endpoint that records every request and answers as ``answer`` says."""

    host: str = "127.0.0.1"
    answer: TokenAnswer = field(default_factory=issue)
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = 0
    hold: asyncio.Event | None = None  # when set: answer only once it is set (at most 30 s)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    async def _handle(self, request: web.Request) -> web.Response:
        form = {name: str(value) for name, value in (await request.post()).items()}
        seen = TokenRequest(form, dict(request.headers), request.remote or "")
        self.requests.append(seen)
        n = len(self.requests) - 1
        if self.hold is not None:
            await asyncio.wait_for(self.hold.wait(), 30)
        return self.answer(seen, n)

    async def start(self) -> TokenEndpoint:
        app = web.Application()
        app.router.add_post("/token", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, backlog=1024)  # as fault_server.py's
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def token_endpoint(**kwargs: Any) -> AsyncIterator[TokenEndpoint]:
    started = await TokenEndpoint(**kwargs).start()
    try:
        yield started
    finally:
        await started.stop()


# -- subprocesses ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Subprocess:
    """A subprocess with stdout and stderr in a log file; ``stop()`` always reaps it."""

    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> Subprocess:
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_alive(self) -> None:
        assert self.popen is not None
        code = self.popen.poll()
        assert code is None, f"{self.args[0]} exited with {code}:\n{self.output()}"

    async def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.popen.wait, 10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                await asyncio.to_thread(self.popen.wait, 10)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class OAuthServer:
    """oauth2-mock-server: token endpoint ``token_url``, keys at ``jwks_url``."""

    issuer: str
    port: int

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"


@contextlib.asynccontextmanager
async def oauth_server(log_dir: Path) -> AsyncIterator[OAuthServer]:
    """``node tests/tools/oauth-server.mjs 0``, until it prints ``ready <issuer>``."""
    process = Subprocess(
        ["node", str(OAUTH_SERVER_SCRIPT), "0"], log_dir / "oauth-server.log"
    ).start()
    try:
        issuer = ""

        async def ready() -> bool:
            nonlocal issuer
            process.check_alive()
            for line in process.output().splitlines():
                if line.startswith("ready "):
                    issuer = line.split(" ", 1)[1].strip().rstrip("/")
                    return True
            return False

        await eventually(ready, within=30, what="the OAuth server to start")
        port = int(issuer.rsplit(":", 1)[1])
        yield OAuthServer(issuer, port)
    finally:
        await process.stop()


@dataclass
class Tinyproxy:
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self) -> list[str]:
        """The request lines tinyproxy forwarded, e.g. ``POST http://127.0.0.1:1234/hook``."""
        found = []
        for line in self.log().splitlines():
            if "Request (file descriptor" in line:
                found.append(line.split("): ", 1)[1].rsplit(" HTTP/", 1)[0])
        return found


def _tinyproxy_config(work_dir: Path) -> tuple[int, Path, Path]:
    """A config file of its own: a free loopback port, a log file, loopback clients only."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = work_dir / "tinyproxy.log"
    config = work_dir / "tinyproxy.conf"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "Listen 127.0.0.1",
                "Timeout 30",
                f'LogFile "{log_path}"',
                "LogLevel Connect",
                "MaxClients 100",
                "Allow 127.0.0.0/8",
                "",
            ]
        )
    )
    return port, log_path, config


@contextlib.asynccontextmanager
async def tinyproxy(work_dir: Path) -> AsyncIterator[Tinyproxy]:
    """tinyproxy in the foreground, with its own config file, on a free loopback port."""
    port, log_path, config = _tinyproxy_config(work_dir)
    process = Subprocess([TINYPROXY, "-d", "-c", str(config)], work_dir / "tinyproxy.out").start()
    try:

        async def listening() -> bool:
            process.check_alive()
            return port_open("127.0.0.1", port)

        await eventually(listening, within=20, what="tinyproxy to listen")
        yield Tinyproxy(port, log_path)
    finally:
        await process.stop()
