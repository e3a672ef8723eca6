"""The dashboard end to end in headless Chromium (Playwright with Debian's chromium).

The real application runs under uvicorn in a background thread with its delivery workers
(SQLite in a temporary folder), next to a local receiver that also plays the OAuth token
server. The tests click through sign-in, creating a webhook with OAuth, a test event and its
attempts, a dead letter and its replay, and the sample downloads. Every step is
photographed: into a temporary folder, or with ``CONSENT_RELAY_SCREENSHOTS=1`` into
docs/screenshots/ (same names every run), which refreshes the README's pictures.

Chromium must be at /usr/bin/chromium (``scripts/test-deps.sh`` installs it); without it the
tests fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiohttp import web
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from standardwebhooks.webhooks import Webhook

from consent_relay import crypto
from consent_relay.api.app import create_app
from consent_relay.domain import samples
from consent_relay.settings import Settings
from tests.receiver import Received, Receiver

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
README_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SCREENSHOTS = (
    README_SCREENSHOTS
    if os.environ.get("CONSENT_RELAY_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "consent-relay-screenshots"
)
ADMIN_TOKEN = "browser-test-admin-token"
CLIENT_SECRET = "browser-client-secret"
TIMEOUT_MS = 20_000  # for anything that waits on a delivery

pytestmark = pytest.mark.timeout(180)


# -- the running stack -----------------------------------------------------------------------


@dataclass
class Behaviours:
    """What the receiver answers; flipped from the test thread."""

    flaky_fails: bool = True
    tokens_issued: int = 0
    token_requests: list[Received] = field(default_factory=list)


@dataclass
class Stack:
    base_url: str
    api_key: str
    receiver: Receiver
    behaviours: Behaviours

    def receiver_url(self, path: str) -> str:
        return self.receiver.url(path)

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )


def _receiver_behaviours(receiver: Receiver, state: Behaviours) -> None:
    def token(item: Received, _count: int) -> web.StreamResponse:
        state.token_requests.append(item)
        state.tokens_issued += 1
        return web.json_response(
            {
                "access_token": f"tok-{state.tokens_issued}",
                "token_type": "Bearer",
                "expires_in": 600,
            }
        )

    def crm(_item: Received, count: int) -> web.StreamResponse:
        # The first request of each run fails once, so a delivery shows two attempts.
        if count == 0:
            return web.Response(status=503, text="busy, try again")
        return web.Response(status=204)

    def flaky(_item: Received, _count: int) -> web.StreamResponse:
        if state.flaky_fails:
            return web.Response(status=500, text='{"error": "database down"}')
        return web.Response(status=200, text='{"ok": true}')

    receiver.behaviours.update({"/token": token, "/crm": crm, "/flaky": flaky})


class ServerThread(threading.Thread):
    """uvicorn (the app with workers) and the receiver on one event loop of their own."""

    def __init__(self, settings: Settings, sock: socket.socket, behaviours: Behaviours) -> None:
        super().__init__(name="dashboard-browser-stack", daemon=True)
        self.settings = settings
        self.sock = sock
        self.behaviours = behaviours
        self.server: uvicorn.Server | None = None
        self.receiver: Receiver | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the fixture, not lost in the thread
            self.error = exc

    async def _main(self) -> None:
        self.receiver = await Receiver().start()
        _receiver_behaviours(self.receiver, self.behaviours)
        app = create_app(self.settings, workers=True)
        config = uvicorn.Config(app, log_level="warning", access_log=False, ws="none")
        self.server = uvicorn.Server(config)
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            await self.receiver.stop()

    @property
    def serving(self) -> bool:
        if self.error is not None:
            raise self.error
        if not self.is_alive():
            raise AssertionError("the app stopped")
        return self.server is not None and self.server.started and self.receiver is not None

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.join(timeout=30)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("dashboard-browser")
    settings = Settings(
        data_dir=folder / "data",
        database_url=f"sqlite:///{folder / 'relay.db'}",
        admin_token=ADMIN_TOKEN,
        secret_key=crypto.new_key(),
        allowed_networks=["127.0.0.0/8"],
        retry_schedule=[0.05] * 5,
        retry_jitter=0.0,
        request_timeout=5.0,
        connect_timeout=2.0,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    behaviours = Behaviours()
    thread = ServerThread(settings, sock, behaviours)
    thread.start()
    try:
        poll(lambda: thread.serving, "the app to start", timeout=30)
        assert thread.receiver is not None
        base_url = f"http://127.0.0.1:{port}"
        created = httpx.post(
            f"{base_url}/v1/admin/organizations",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            json={"id": "acme", "name": "Acme"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        yield Stack(base_url, created.json()["api_key"], thread.receiver, behaviours)
    finally:
        thread.stop()
        sock.close()
    if thread.error is not None:
        raise thread.error


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: run `bash scripts/test-deps.sh` "
            "(Debian package chromium). The browser tests need it; they do not skip.",
            pytrace=False,
        )
    playwright: Playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context: BrowserContext = browser.new_context(
        base_url=stack.base_url,
        viewport={"width": 1280, "height": 900},
        device_scale_factor=1,
        color_scheme="light",
        reduced_motion="reduce",
        accept_downloads=True,
    )
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    context.close()


# -- helpers ---------------------------------------------------------------------------------


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True, animations="disabled")


def sign_in(page: Page, stack: Stack) -> None:
    page.goto("/dashboard/login")
    page.get_by_label("API key").fill(stack.api_key)
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()


def poll(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Bounded polling of a condition outside the browser (the receiver, the API)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def make_webhook(stack: Stack, path: str, **fields: Any) -> dict[str, Any]:
    with stack.api() as api:
        response = api.post("/v1/webhooks", json={"url": stack.receiver_url(path), **fields})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def deliveries_of(stack: Stack, webhook_id: str, status: str) -> list[dict[str, Any]]:
    with stack.api() as api:
        response = api.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"status": status})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def record_event(stack: Stack, ouid: str, purposes: dict[str, bool]) -> None:
    with stack.api() as api:
        response = api.post(
            "/v1/consents/events",
            json={
                "user": {"organization_user_id": ouid, "country": "FR"},
                "consents": {
                    "purposes": [{"id": key, "enabled": on} for key, on in purposes.items()],
                    "vendors": {"enabled": ["google"], "disabled": ["facebook"]},
                },
                "metadata": {"source": "website-banner"},
            },
        )
    assert response.status_code == 201, response.text


# -- the walk-through ------------------------------------------------------------------------


def test_sign_in_refuses_a_bad_key_then_signs_in_and_out(page: Page, stack: Stack) -> None:
    page.goto("/dashboard")
    expect(page).to_have_url(re.compile(r"/dashboard/login$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "01-sign-in.png")

    page.get_by_label("API key").fill("crk_this-key-does-not-exist")
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("unknown or has been revoked")
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("API key").fill(stack.api_key)
    page.get_by_test_id("sign-in").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.get_by_test_id("organization")).to_have_text("acme")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["cr_dashboard"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/dashboard"
    assert page.evaluate("document.cookie") == ""  # nothing readable by scripts

    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("notice")).to_have_text("You are signed out.")
    page.goto("/dashboard")
    expect(page).to_have_url(re.compile(r"/dashboard/login$"))


def test_create_webhook_with_oauth_send_a_test_event_and_read_its_attempts(
    page: Page, stack: Stack
) -> None:
    sign_in(page, stack)
    page.get_by_test_id("new-webhook").click()
    expect(page.get_by_role("heading", name="New webhook")).to_be_visible()

    # Mistakes are refused, each message next to its field.
    page.get_by_label("URL", exact=True).fill("not a url")
    page.get_by_label("Get an OAuth 2.0 token").check()
    page.get_by_label("Token URL").fill("ftp://auth.example.com/token")
    page.get_by_test_id("save-webhook").click()
    expect(page.get_by_test_id("form-errors")).to_be_visible()
    expect(page.get_by_test_id("error-url")).to_contain_text("URL")
    expect(page.get_by_label("URL", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("error-authentication.token_url")).to_contain_text("URL scheme")
    expect(page.get_by_test_id("error-authentication.client_id")).to_be_visible()
    expect(page.get_by_label("Token URL")).to_have_value("ftp://auth.example.com/token")
    screenshot(page, "02-webhook-form-errors.png")

    page.goto("/dashboard/webhooks/new")
    page.get_by_label("URL", exact=True).fill(stack.receiver_url("/crm"))
    page.get_by_label("Description").fill("CRM sync")
    page.get_by_label("Flatten payloads").check()
    page.get_by_role("checkbox", name="ccpa").check()
    page.get_by_label("Header name 1").first.fill("X-Env")
    page.get_by_label("Header value 1").first.fill("demo")
    oauth_fields = page.locator("#oauth-fields")
    page.get_by_label("Get an OAuth 2.0 token").uncheck()
    expect(oauth_fields).to_be_hidden()
    page.get_by_label("Get an OAuth 2.0 token").check()
    expect(oauth_fields).to_be_visible()
    page.get_by_label("Token URL").fill(stack.receiver_url("/token"))
    page.get_by_label("Client ID").fill("relay-demo")
    page.get_by_label("Client secret").fill(CLIENT_SECRET)
    page.get_by_label("Scope").fill("consents:write")
    page.get_by_label("Client authentication").select_option("client_secret_basic")
    # "Add a header" (our script) adds a third row to the token request headers.
    token_rows = page.locator('[data-header-rows="token_header"] .header-row')
    expect(token_rows).to_have_count(2)
    page.locator('button[data-add-row="token_header"]').click()
    expect(token_rows).to_have_count(3)
    token_rows.nth(2).get_by_label("Header name 3").fill("X-Tenant")
    token_rows.nth(2).get_by_label("Header value 3").fill("acme")
    screenshot(page, "03-webhook-form.png")
    page.get_by_test_id("save-webhook").click()

    # Created: the signing secret is shown this once.
    secret_box = page.get_by_test_id("new-secret")
    expect(secret_box).to_have_value(re.compile(r"^whsec_"))
    secret = secret_box.input_value()
    webhook_id = page.get_by_test_id("webhook-id").inner_text()
    expect(page.get_by_test_id("authentication")).to_contain_text("relay-demo")
    expect(page.get_by_test_id("authentication")).to_contain_text("secret stored")
    assert CLIENT_SECRET not in page.content()
    screenshot(page, "04-webhook-created.png")

    # A test event, followed to its delivery: the page refreshes until it is delivered.
    page.get_by_label("Send a test event").select_option("user.updated")
    page.get_by_test_id("send-test").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Test event queued.")
    page.get_by_test_id("sent-delivery").click()
    expect(page.get_by_test_id("delivery-status")).to_have_text("delivered", timeout=TIMEOUT_MS)
    attempts = page.get_by_test_id("attempt")
    expect(attempts).to_have_count(2)
    first, second = attempts.nth(0), attempts.nth(1)
    expect(first).to_have_attribute("data-outcome", "E_HTTP")
    expect(first.get_by_test_id("attempt-status-code")).to_have_text("503")
    expect(first.get_by_test_id("attempt-response-body")).to_have_text("busy, try again")
    expect(second).to_have_attribute("data-outcome", "ok")
    expect(second.get_by_test_id("attempt-status-code")).to_have_text("204")
    expect(second.get_by_test_id("attempt-duration")).to_have_text(re.compile(r"^\d+\s*ms$"))
    headers = second.get_by_test_id("attempt-request-headers")
    expect(headers).to_contain_text("webhook-signature")
    expect(headers).to_contain_text("X-Env")
    expect(headers).to_contain_text("[redacted]")  # the bearer token is not kept
    expect(page.get_by_test_id("request-body")).to_contain_text('"type": "user.updated"')
    expect(page.get_by_test_id("request-body")).to_contain_text('"regulation": "gdpr"')
    screenshot(page, "05-delivery-attempts.png")

    # The receiver got a token (client_secret_basic, our header) and a signed, flattened body.
    token_request = stack.behaviours.token_requests[0]
    assert token_request.headers["Authorization"].startswith("Basic ")
    assert token_request.headers["X-Tenant"] == "acme"
    assert b"scope=consents%3Awrite" in token_request.body
    delivered = stack.receiver.at("/crm")[-1]
    assert delivered.headers["Authorization"].startswith("Bearer tok-")
    assert delivered.headers["X-Env"] == "demo"
    Webhook(secret).verify(delivered.body, delivered.headers)
    flattened = json.loads(delivered.body)
    assert "parameters" not in flattened
    assert flattened["parameters__entity__organization_user_id"] == "jane@example.com"

    # Rotating the secret shows the new one, once.
    page.goto(f"/dashboard/webhooks/{webhook_id}")
    expect(page.get_by_test_id("new-secret-panel")).to_have_count(0)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("rotate-secret").click()
    expect(page.get_by_test_id("new-secret")).to_have_value(re.compile(r"^whsec_"))
    assert page.get_by_test_id("new-secret").input_value() != secret
    expect(page.get_by_test_id("new-secret-panel")).to_contain_text("24 hours")

    # Editing keeps the stored client secret when the field is left blank.
    page.get_by_test_id("edit-webhook").click()
    expect(page.get_by_label("Client secret")).to_have_value("")
    expect(page.get_by_text("A secret is stored; leave blank to keep it.")).to_be_visible()
    page.get_by_label("Description").fill("CRM sync (EU)")
    page.get_by_test_id("save-webhook").click()
    expect(page.get_by_test_id("notice")).to_have_text("Webhook saved.")
    expect(page.get_by_test_id("authentication")).to_contain_text("secret stored")


def test_dead_letter_is_replayed_and_delivered(page: Page, stack: Stack) -> None:
    stack.behaviours.flaky_fails = True
    hook = make_webhook(
        stack,
        "/flaky",
        event_types=["event.created", "user.created"],
        description="Data warehouse",
        headers={"X-Source": "consent-relay"},
        auto_replay=False,  # replayed by hand here, not once the first replay is delivered
    )
    record_event(stack, "jane@example.com", {"analytics": True, "marketing": False})
    poll(lambda: len(deliveries_of(stack, hook["id"], "dead")) == 2, "two dead letters")

    sign_in(page, stack)
    row = page.locator(f'[data-testid="webhook-row"][data-webhook-id="{hook["id"]}"]')
    expect(row.get_by_test_id("dead-count")).to_have_text("2")
    expect(row.get_by_test_id("health-status")).to_have_text("failing")
    screenshot(page, "06-webhooks-health.png")

    row.get_by_role("link", name=stack.receiver_url("/flaky")).click()
    dead_rows = page.get_by_test_id("dead-row")
    expect(dead_rows).to_have_count(2)
    expect(page.get_by_test_id("last-failure")).to_contain_text("E_HTTP 500")
    screenshot(page, "07-dead-letters.png")

    # The receiver is fixed: replay one, then all the others.
    stack.behaviours.flaky_fails = False
    first_id = dead_rows.first.get_attribute("data-delivery-id")
    dead_rows.first.get_by_test_id("replay-one").click()
    expect(page.get_by_test_id("notice")).to_contain_text("Dead letters queued again.")
    expect(page.get_by_test_id("replayed-count")).to_have_text("1")
    expect(dead_rows).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("replay-all").click()
    expect(page.get_by_test_id("replayed-count")).to_have_text("1")
    expect(page.get_by_test_id("no-dead-letters")).to_be_visible()

    # The first dead letter links to its replay, which ends delivered.
    page.goto(f"/dashboard/deliveries/{first_id}")
    expect(page.get_by_test_id("delivery-status")).to_have_text("dead")
    expect(page.get_by_test_id("attempt")).to_have_count(6)
    page.get_by_test_id("replayed-by").click()
    expect(page.get_by_test_id("delivery-status")).to_have_text("delivered", timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("attempt")).to_have_count(1)
    expect(page.get_by_test_id("attempt").first).to_have_attribute("data-outcome", "ok")
    poll(lambda: len(deliveries_of(stack, hook["id"], "delivered")) == 2, "both replays delivered")
    bodies = [r.json for r in stack.receiver.at("/flaky")]
    assert {body["type"] for body in bodies[-2:]} == {"event.created", "user.created"}


def test_sample_payloads_download(page: Page, stack: Stack) -> None:
    hook = make_webhook(stack, "/samples-only", enabled=False)
    sign_in(page, stack)
    page.goto(f"/dashboard/webhooks/{hook['id']}")
    for test_id, flatten in (("sample-user.updated-flat", True), ("sample-event.created", False)):
        with page.expect_download() as info:
            page.get_by_test_id(test_id).click()
        download = info.value
        kind = "user.updated" if flatten else "event.created"
        expected_name = f"{kind}.flattened.json" if flatten else f"{kind}.json"
        assert download.suggested_filename == expected_name
        saved = Path(download.path())
        assert json.loads(saved.read_text()) == samples.sample_body(kind, flatten=flatten)


def test_recent_consent_events_and_users(page: Page, stack: Stack) -> None:
    record_event(stack, "ada@example.com", {"analytics": True, "marketing": True})
    record_event(stack, "grace@example.com", {"analytics": False, "marketing": True})
    sign_in(page, stack)
    page.get_by_role("link", name="Consent events").click()
    expect(page.get_by_role("heading", name="Consent events")).to_be_visible()
    rows = page.get_by_test_id("event-row")
    expect(rows.first).to_contain_text("grace@example.com")
    expect(rows.first).to_contain_text("analytics ✗")
    screenshot(page, "08-consent-events.png")
    rows.first.get_by_text("JSON").click()
    expect(rows.first.locator("pre")).to_contain_text('"organization_user_id": "grace@example.com"')

    page.get_by_role("link", name="Users").click()
    users = page.get_by_test_id("user-row")
    expect(users.first).to_contain_text("grace@example.com")
    expect(page.get_by_test_id("users")).to_contain_text("ada@example.com")
    screenshot(page, "09-users.png")
    users.first.get_by_role("link", name="Events").click()
    expect(page.get_by_test_id("event-row")).to_have_count(1)
