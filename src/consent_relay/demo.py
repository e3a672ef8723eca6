"""``consent-relay demo``: a short consent story, delivered live.

Everything runs in one asyncio program on 127.0.0.1 and a temporary SQLite database: the
service (API and delivery worker, served by uvicorn), a receiver with two webhook endpoints
(a CRM behind OAuth, an email tool that fails its first two requests) and an OAuth token
endpoint. The story goes through the real HTTP API; each request that reaches the receiver
is shown in a live table. It ends by itself, checks that everything arrived, once and in
order, and cleans up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvicorn
import uvloop
from aiohttp import web
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from standardwebhooks.webhooks import Webhook

from consent_relay.api.app import create_app
from consent_relay.settings import Settings

CRM, EMAIL = "/crm", "/email"
NAMES = {CRM: "CRM", EMAIL: "Email"}
CLIENT_ID = "consent-relay-demo"
# What each receiver must end up with, in this order (one user, so one ordered stream).
EXPECTED = {
    CRM: [
        "event.created", "user.created",  # Jane opts in
        "event.created",  # pending double opt-in (no user change yet)
        "event.updated", "user.updated",  # confirmed
        "event.created", "user.updated",  # withdrawal
        "user.deleted",  # deletion
    ],
    EMAIL: ["user.created", "user.updated", "user.updated", "user.deleted"],
}  # fmt: skip
EMAIL_FAILURES = 2
SETTLE_SECONDS, MIN_SETTLE_SECONDS = 30.0, 10.0  # bounded wait for the last deliveries
QUIET_LOGGERS = ("consent_relay", "uvicorn", "uvicorn.error", "aiohttp")


class DemoError(Exception):
    """The story cannot go on (an API call failed, or deliveries did not arrive in time)."""


@dataclass
class Arrival:
    elapsed: float
    path: str
    type: str
    message_id: str
    attempt: int
    status: int
    flat_keys: int | None  # number of keys when the body is flattened


@dataclass
class Peers:
    """The local receiver (two webhook endpoints) and the OAuth token endpoint."""

    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    verifiers: dict[str, Webhook] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    token_requests: int = 0
    bad_signatures: int = 0
    started: float = field(default_factory=time.monotonic)
    on_arrival: Callable[[], None] = lambda: None

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != self.client_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        token = "tok_" + secrets.token_urlsafe(16)
        self.tokens.add(token)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": 3600}
        )

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        message_id = request.headers.get("webhook-id", "?")
        attempt = 1 + sum(a.message_id == message_id for a in self.arrivals if a.path == path)
        try:
            self.verifiers[path].verify(body, dict(request.headers))
            signed = True
        except Exception:  # any verification failure: wrong secret, stale or missing header
            signed = False
            self.bad_signatures += 1
        payload = orjson.loads(body)
        if not signed:
            status = 400
        elif (
            path == CRM
            and request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens
        ):
            status = 401
        elif path == EMAIL and sum(a.path == EMAIL for a in self.arrivals) < EMAIL_FAILURES:
            status = 500  # the email tool has a bad moment
        else:
            status = 204
        flat = any("__" in key for key in payload)
        self.arrivals.append(
            Arrival(
                time.monotonic() - self.started,
                path,
                str(payload.get("type")),
                message_id,
                attempt,
                status,
                len(payload) if flat else None,
            )
        )
        self.on_arrival()
        return web.Response(status=status)

    def delivered(self, path: str) -> list[str]:
        return [a.type for a in self.arrivals if a.path == path and 200 <= a.status < 300]


@contextlib.asynccontextmanager
async def _serve_aiohttp(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _serve_api(settings: Settings) -> AsyncIterator[str]:
    """The API and its delivery worker, in this process, on a free 127.0.0.1 port."""
    config = uvicorn.Config(
        create_app(settings, workers=True),
        host="127.0.0.1",
        port=0,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                raise DemoError("the service did not start")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True  # lifespan shutdown stops the worker
        await task


class Api:
    """A few JSON calls to the service, failing loudly on anything unexpected."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str) -> None:
        self.session, self.base, self.headers = session, base, {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(
            method, self.base + path, json=body, headers=self.headers
        ) as response:
            text = await response.text()
            if response.status >= 300:
                raise DemoError(f"{method} {path} answered {response.status}: {text[:300]}")
            return orjson.loads(text) if text else None


def _table(peers: Peers) -> Table:
    table = Table(
        title="Webhooks as they arrive",
        title_justify="left",
        caption="try: attempt number; a failed attempt is retried with the same webhook-id",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name in ("t", "to", "type", "webhook-id", "try", "outcome", "body"):
        table.add_column(name, justify="right" if name in ("t", "try") else "left", no_wrap=True)
    for a in peers.arrivals:
        if 200 <= a.status < 300:
            outcome = "[green]delivered[/green]"
        elif a.status == 500:
            outcome = "[red]failed (500)[/red]"
        else:
            outcome = f"[red]refused ({a.status})[/red]"
        body = f"flat ({a.flat_keys})" if a.flat_keys is not None else "nested"
        table.add_row(
            f"{a.elapsed:.2f}s",
            NAMES[a.path],
            a.type,
            f"…{a.message_id[-6:]}",
            str(a.attempt),
            outcome,
            body,
        )
    return table


def _event(consents: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"user": {"organization_user_id": "jane@example.com"}, "consents": consents, **extra}


async def _story(api: Api, pause: float, say: Callable[[str], None]) -> None:
    events = "/v1/consents/events"
    say("Jane signs up and opts in to marketing (a new user, a [bold]confirmed[/bold] event).")
    opt_in = {
        "purposes": [{"id": "marketing", "enabled": True}],
        "channels": [{"id": "email", "enabled": True}],
    }
    first = await api.call("POST", events, _event(opt_in))
    await asyncio.sleep(pause)
    say("She asks for the newsletter: a [bold]pending[/bold] double opt-in, awaiting her click.")
    newsletter = {"channels": [{"id": "newsletter", "enabled": True}]}
    pending = await api.call("POST", events, _event(newsletter, status="pending_approval"))
    await asyncio.sleep(pause)
    say("She clicks the link in the email: PATCH the event to [bold]confirmed[/bold].")
    await api.call("PATCH", f"{events}/{pending['id']}", {"status": "confirmed"})
    await asyncio.sleep(pause)
    say("She [bold]withdraws[/bold] her marketing consent (enabled: false).")
    await api.call("POST", events, _event({"purposes": [{"id": "marketing", "enabled": False}]}))
    await asyncio.sleep(pause)
    say("She asks to be forgotten: her user is [bold]deleted[/bold].")
    await api.call("DELETE", f"/v1/consents/users/{first['user']['id']}")


async def _settled(api: Api, hooks: dict[str, str], peers: Peers) -> list[dict[str, Any]]:
    """Every delivery, once all expected ones were delivered (else an empty list)."""
    if any(len(peers.delivered(path)) < len(EXPECTED[path]) for path in EXPECTED):
        return []
    rows: list[dict[str, Any]] = []
    for path, hook_id in hooks.items():
        page = await api.call("GET", f"/v1/webhooks/{hook_id}/deliveries")
        rows += [{**row, "path": path} for row in page["data"]]
    return rows if all(row["status"] == "delivered" for row in rows) else []


async def _run(speed: float, data_dir: Path, console: Console) -> int:
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'consent-relay.db'}",
        admin_token="adm_" + secrets.token_urlsafe(24),
        allowed_networks=["127.0.0.0/8"],
        retry_schedule=[delay / speed for delay in (0.5, 1.0, 1.0, 1.0, 1.0)],
        require_https=False,
        egress_proxy="",
        egress_source_address="",
    )
    peers = Peers()
    receiver, token_app = web.Application(), web.Application()
    receiver.router.add_post(CRM, peers.hook)
    receiver.router.add_post(EMAIL, peers.hook)
    token_app.router.add_post("/oauth/token", peers.token)
    pause = 2.0 / speed
    async with contextlib.AsyncExitStack() as stack:
        hooks_url = await stack.enter_async_context(_serve_aiohttp(receiver))
        token_url = await stack.enter_async_context(_serve_aiohttp(token_app)) + "/oauth/token"
        base = await stack.enter_async_context(_serve_api(settings))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        console.print(f"Consent Relay on {base}, receiver on {hooks_url}, OAuth on {token_url}")
        admin = Api(session, base, settings.admin_token)
        org = await admin.call("POST", "/v1/admin/organizations", {"id": "acme", "name": "Acme"})
        api = Api(session, base, org["api_key"])
        console.print("Organization [bold]acme[/bold] created with an API key.")
        crm = await api.call(
            "POST",
            "/v1/webhooks",
            {
                "url": hooks_url + CRM,
                "description": "CRM (flattened, OAuth)",
                "flatten": True,
                "authentication": {
                    "token_url": token_url,
                    "client_id": CLIENT_ID,
                    "client_secret": peers.client_secret,
                    "scope": "consents:write",
                },
            },
        )
        email = await api.call(
            "POST",
            "/v1/webhooks",
            {
                "url": hooks_url + EMAIL,
                "description": "Email tool (user.* only)",
                "event_types": ["user.created", "user.updated", "user.deleted"],
            },
        )
        hooks = {CRM: crm["id"], EMAIL: email["id"]}
        for path, hook in ((CRM, crm), (EMAIL, email)):
            peers.verifiers[path] = Webhook(hook["signing_secret"])
            console.print(f"Webhook [bold]{hook['description']}[/bold]: {hook['id']}")
        console.print(
            "[dim]The email tool is having a bad moment: its first two answers are HTTP 500.[/dim]"
        )
        peers.started = time.monotonic()
        with Live(_table(peers), console=console, refresh_per_second=10) as live:
            peers.on_arrival = lambda: live.update(_table(peers))
            step = itertools.count(1)
            await _story(
                api,
                pause,
                lambda text: live.console.print(
                    f"[dim]{time.monotonic() - peers.started:5.2f}s[/dim] "
                    f"[cyan]{next(step)}.[/] {text}"
                ),
            )
            deadline = time.monotonic() + max(SETTLE_SECONDS / speed, MIN_SETTLE_SECONDS)
            rows: list[dict[str, Any]] = []
            while not rows and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                rows = await _settled(api, hooks, peers)
            live.update(_table(peers), refresh=True)
        if not rows:
            for path, expected in EXPECTED.items():
                console.print(f"{NAMES[path]}: expected {expected}, got {peers.delivered(path)}")
            raise DemoError("not every webhook was delivered in time")
        retried = [row["id"] for row in rows if row["attempt_count"] > 1]
        if not retried:
            raise DemoError("the email tool's failures were not retried")
        detail = await api.call("GET", f"/v1/deliveries/{retried[0]}")
    return _summary(console, peers, rows, detail)


def _summary(
    console: Console, peers: Peers, rows: list[dict[str, Any]], detail: dict[str, Any]
) -> int:
    attempts = sum(row["attempt_count"] for row in rows)
    in_order = all(peers.delivered(path) == expected for path, expected in EXPECTED.items())
    counts = ", ".join(f"{NAMES[p]} {sum(r['path'] == p for r in rows)}" for p in EXPECTED)
    tries = "; ".join(
        f"#{a['attempt_number']} {a['outcome']}"
        + (f" ({a['status_code']})" if a["status_code"] else "")
        for a in detail["attempts"]
    )
    console.print()
    console.print("[bold]Summary[/bold]")
    console.print(f"  messages delivered: {len(rows)} ({counts}), every one once")
    console.print(f"  attempts: {attempts} (received by the receiver: {len(peers.arrivals)})")
    console.print(f"  {NAMES[EMAIL]} {detail['type']} ({detail['id']}): {tries}")
    console.print(f"  in order per user: {'yes' if in_order else '[red]no[/red]'}")
    console.print(f"  token requests: {peers.token_requests} (one token, cached, for the CRM)")
    console.print(f"  signatures verified: {len(peers.arrivals) - peers.bad_signatures} valid")
    ok = (
        in_order
        and peers.token_requests == 1
        and peers.bad_signatures == 0
        and attempts == len(peers.arrivals)
    )
    console.print("[green]Demo complete.[/green]" if ok else "[red]Demo failed.[/red]")
    return 0 if ok else 1


def main(*, speed: float = 1.0, keep: bool = False) -> int:
    """Play the demo; 0 when every webhook arrived as expected."""
    console = Console()
    if not speed > 0:
        console.print("[red]error:[/red] --speed must be greater than 0")
        return 2
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)  # the table tells the story; failures are expected
    data_dir = Path(tempfile.mkdtemp(prefix="consent-relay-demo-"))
    try:
        return uvloop.run(_run(speed, data_dir, console))
    except DemoError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if keep:
            console.print(f"Data kept in {data_dir}. Look at a delivery with:")
            console.print(
                f"  CONSENT_RELAY_DATA_DIR={data_dir} consent-relay deliveries show <dlv_...> "
                "--org acme"
            )
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
