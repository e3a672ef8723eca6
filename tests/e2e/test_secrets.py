"""Secrets at rest and in logs, end to end: canary secrets (an OAuth client secret, signing
secrets, an access token, a custom header value) are found nowhere in the database (SQLite
file bytes with its WAL, every PostgreSQL row) nor in logs nor in API answers; ``consent-relay
rotate-secret-key`` re-encrypts them so that deliveries still sign and authenticate with the
same secrets, read with the new key only."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner, Result

from consent_relay import crypto, errors
from consent_relay.cli import app
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import inspect
from tests.e2e.oauth_peers import (
    TokenEndpoint,
    TokenRequest,
    delivery_statuses,
    eventually,
    make_webhook,
    oauth,
    post_events,
    running,
    token_endpoint,
)
from tests.receiver import Receiver

ONLY_EVENTS = {"event_types": ["event.created"]}


class Canaries:
    """Unique, recognisable secrets; the token endpoint only answers the right client."""

    def __init__(self) -> None:
        self.client_secret = f"canary-client-secret-{secrets.token_hex(12)}"
        self.access_token = f"canary-access-token-{secrets.token_hex(12)}"
        self.header_value = f"canary-header-value-{secrets.token_hex(12)}"
        self.signing: list[str] = []

    def answer(self, request: TokenRequest, n: int) -> web.Response:
        given = request.form.get("client_secret")
        if given is None and request.headers.get("Authorization", "").startswith("Basic "):
            raw = base64.b64decode(request.headers["Authorization"][6:]).decode()
            given = raw.split(":", 1)[1]
        if given != self.client_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response(
            {"access_token": f"{self.access_token}-{n}", "token_type": "Bearer"}
        )

    def needles(self) -> list[str]:
        basic = base64.b64encode(f"relay:{self.client_secret}".encode()).decode()
        found = [self.client_secret, self.access_token, basic, self.header_value]
        for secret in self.signing:
            found += [secret, secret.removeprefix("whsec_")]
        return found


@pytest.fixture
def canaries() -> Canaries:
    return Canaries()


@pytest.fixture
async def tokens(canaries: Canaries) -> AsyncIterator[TokenEndpoint]:
    async with token_endpoint(answer=canaries.answer) as endpoint:
        yield endpoint


def assert_absent(where: str, haystack: str | bytes, needles: Iterable[str]) -> None:
    for needle in needles:
        if isinstance(haystack, bytes):
            assert needle.encode() not in haystack, f"{needle!r} found in {where}"
        else:
            assert needle not in haystack, f"{needle!r} found in {where}"


async def database_dump(ctx: Context, settings: Settings, tmp_path: Path) -> list[tuple[str, Any]]:
    """Everything the database holds: on SQLite the bytes of its files (main file, WAL,
    shared memory) and every row; on PostgreSQL every row of every table, as text."""
    dumped: list[tuple[str, Any]] = []
    async with ctx.store.read() as tx:
        tables = await inspect.table_names(tx)
        dumped += [(f"row of {table}", row) for table, row in await inspect.dump(tx)]
    assert "webhooks" in tables
    assert "attempts" in tables
    if ctx.store.is_sqlite:
        dumped += sqlite_files(tmp_path)
    return dumped


def sqlite_files(folder: Path) -> list[tuple[str, Any]]:
    """The bytes of the SQLite database and its companions (``-wal``, ``-shm``)."""
    files = sorted(folder.glob("test.db*"))
    assert files, "no SQLite file found"
    return [(f"file {path.name}", path.read_bytes()) for path in files]


async def _delivered(ctx: Context, count: int) -> bool:
    statuses = await delivery_statuses(ctx)
    return len(statuses) == count and set(statuses) == {"delivered"}


async def test_canary_secrets_are_nowhere_at_rest_in_logs_or_answers(
    api: httpx.AsyncClient,
    ctx: Context,
    settings: Settings,
    receiver: Receiver,
    tokens: TokenEndpoint,
    canaries: Canaries,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    post_hook = await make_webhook(
        api,
        receiver.url("/post"),
        headers={"X-Api-Key": canaries.header_value},
        authentication=oauth(tokens.url, client_secret=canaries.client_secret),
        **ONLY_EVENTS,
    )
    basic_hook = await make_webhook(
        api,
        receiver.url("/basic"),
        authentication=oauth(
            tokens.url,
            client_secret=canaries.client_secret,
            client_auth_method="client_secret_basic",
        ),
        **ONLY_EVENTS,
    )
    rotated = await api.post(f"/v1/webhooks/{post_hook['id']}/rotate-secret")
    assert rotated.status_code == 200
    canaries.signing += [
        post_hook["signing_secret"],
        basic_hook["signing_secret"],
        rotated.json()["signing_secret"],
    ]
    await post_events(api, "jane@example.com", "joe@example.com")
    async with running(ctx):
        await receiver.wait_for(4)
        await eventually(lambda: _delivered(ctx, 4), what="4 delivered")
    assert len(tokens.requests) == 2  # one per webhook: the right secret, both ways

    # The receiver got what the secrets make: signatures by both signing secrets of the
    # rotated webhook, and the access token.
    for item in receiver.at("/post"):
        for secret in (post_hook["signing_secret"], rotated.json()["signing_secret"]):
            Webhook(secret).verify(item.body, item.headers)
        assert item.headers["X-Api-Key"] == canaries.header_value  # in clear on the wire only
    for item in receiver.at("/basic"):
        Webhook(basic_hook["signing_secret"]).verify(item.body, item.headers)
    assert all(r.headers["Authorization"].startswith("Bearer canary-access-token-") for r in
               receiver.received)  # fmt: skip

    needles = canaries.needles()
    # At rest: only ciphertexts, which the key opens.
    async with ctx.store.read() as tx:
        stored = await inspect.rows(tx, "webhooks")
    assert [ctx.box.decrypt(row["auth_secret"]) for row in stored] == [canaries.client_secret] * 2
    assert ctx.box.decrypt(stored[0]["previous_signing_secret"]) == post_hook["signing_secret"]
    assert ctx.box.decrypt(stored[0]["signing_secret"]) == rotated.json()["signing_secret"]
    dump = await database_dump(ctx, settings, tmp_path)
    for where, content in dump:
        assert_absent(where, content, needles)
    # ...and the dump does see what is stored: the ciphertexts themselves are in it.
    for ciphertext in (stored[0]["auth_secret"], stored[1]["signing_secret"]):
        needle = ciphertext if isinstance(dump[-1][1], str) else ciphertext.encode()
        assert any(needle in content for _, content in dump if type(content) is type(needle))

    # Never returned: not by reads, lists, deliveries, or attempts.
    answers = [
        await api.get(f"/v1/webhooks/{post_hook['id']}"),
        await api.get(f"/v1/webhooks/{basic_hook['id']}"),
        await api.get("/v1/webhooks"),
    ]
    for hook in (post_hook, basic_hook):
        listed = await api.get(f"/v1/webhooks/{hook['id']}/deliveries")
        answers.append(listed)
        for delivery in listed.json()["data"]:
            answers.append(await api.get(f"/v1/deliveries/{delivery['id']}"))
    for answer in answers:
        assert answer.status_code == 200
        assert_absent(f"GET {answer.request.url}", answer.text, needles)
    assert answers[0].json()["authentication"]["client_secret_set"] is True

    # Never logged (DEBUG, every logger), neither in messages nor in their arguments.
    assert caplog.records, "nothing was logged at all: is capture working?"
    assert_absent("the logs", caplog.text, needles)
    for record in caplog.records:
        assert_absent(f"log record {record.name}", repr(record.args), needles)


def _key_env(settings: Settings, mode: str, key_file: Path) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "CONSENT_RELAY_DATABASE_URL": settings.resolved_database_url,
        "CONSENT_RELAY_DATA_DIR": str(settings.data_dir),
        "CONSENT_RELAY_LOG_LEVEL": "WARNING",
    }
    if mode == "file":
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(settings.secret_key + "\n")
        env["CONSENT_RELAY_SECRET_KEY"] = None  # unset: the key lives in DATA_DIR/secret.key
    else:
        env["CONSENT_RELAY_SECRET_KEY"] = settings.secret_key
    return env


async def rotate_key(settings: Settings, mode: str) -> tuple[str, str]:
    """``consent-relay rotate-secret-key`` on the test database, the old key in
    ``DATA_DIR/secret.key`` (mode "file") or in ``CONSENT_RELAY_SECRET_KEY`` (mode "env").
    Returns the new key and the command's output. ``--force``: the test's own connections
    (its API's, idle) use the database; the guard itself is tested in test_rotation_guard."""
    key_file = settings.data_dir / "secret.key"
    env = _key_env(settings, mode, key_file)
    args = ["rotate-secret-key", "--force"]
    chosen = crypto.new_key()
    if mode == "env":
        args += ["--new-key", chosen]
    # The command runs its own event loop: give it a thread of its own.
    result: Result = await asyncio.to_thread(lambda: CliRunner().invoke(app, args, env=env))
    assert result.exit_code == 0, result.output
    new_key = key_file.read_text().strip() if mode == "file" else chosen
    return new_key, result.output


def rekeyed_context(ctx: Context, key: str) -> Context:
    """The same database, clock and wake-up event; a box that knows ``key`` only."""
    return dataclasses.replace(
        ctx,
        settings=ctx.settings.model_copy(update={"secret_key": key}),
        box=crypto.SecretBox([key]),
    )


async def _stored_secrets(ctx: Context) -> list[str]:
    async with ctx.store.read() as tx:
        stored = await inspect.rows(tx, "webhooks")
    assert len(stored) == 1, stored
    row = stored[0]
    return [row["signing_secret"], row["previous_signing_secret"], row["auth_secret"]]


@pytest.mark.parametrize("mode", ["file", "env"])
async def test_rotate_secret_key_reencrypts_and_deliveries_keep_their_secrets(
    api: httpx.AsyncClient,
    ctx: Context,
    settings: Settings,
    receiver: Receiver,
    tokens: TokenEndpoint,
    canaries: Canaries,
    mode: str,
) -> None:
    hook = await make_webhook(
        api,
        receiver.url(),
        authentication=oauth(tokens.url, client_secret=canaries.client_secret),
        **ONLY_EVENTS,
    )
    rotated = (await api.post(f"/v1/webhooks/{hook['id']}/rotate-secret")).json()
    signing = [rotated["signing_secret"], hook["signing_secret"]]  # current, previous
    await post_events(api, "before@example.com")
    async with running(ctx):
        await receiver.wait_for(1)
        await eventually(lambda: _delivered(ctx, 1), what="the first delivery")
    before = await _stored_secrets(ctx)

    old_key = settings.secret_key
    key_file = settings.data_dir / "secret.key"
    new_key, output = await rotate_key(settings, mode)
    assert "re-encrypted 3 secrets" in output
    assert_absent("the command's output", output, canaries.needles() + signing)
    if mode == "file":
        assert new_key != old_key
        assert not key_file.with_suffix(".new").exists()
        assert (key_file.stat().st_mode & 0o777) == 0o600
    else:
        assert new_key in output.replace("\n", "")
        assert not key_file.exists()

    after = await _stored_secrets(ctx)
    old_box, new_box = crypto.SecretBox([old_key]), crypto.SecretBox([new_key])
    for ciphertext_before, ciphertext_after, plain in zip(
        before, after, [*signing, canaries.client_secret], strict=True
    ):
        assert ciphertext_after != ciphertext_before
        assert new_box.decrypt(ciphertext_after) == plain
        with pytest.raises(errors.BadRequest):
            old_box.decrypt(ciphertext_after)

    # A worker that knows the new key only still signs with both signing secrets and gets
    # a token with the same client secret.
    rekeyed = rekeyed_context(ctx, new_key)
    await post_events(api, "after@example.com")
    async with running(rekeyed):
        await receiver.wait_for(2)
        await eventually(lambda: _delivered(ctx, 2), what="the delivery after the rotation")
    last = receiver.received[-1]
    assert len(last.headers["webhook-signature"].split()) == 2
    for secret in signing:
        Webhook(secret).verify(last.body, last.headers)
    assert [r.form["client_secret"] for r in tokens.requests] == [canaries.client_secret] * 2
    assert last.headers["Authorization"] == f"Bearer {canaries.access_token}-1"


async def test_a_worker_with_the_old_key_holds_the_webhook_then_lets_it_go(
    api: httpx.AsyncClient,
    ctx: Context,
    settings: Settings,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # After the rotation a worker still on the old key cannot open the webhook's secrets:
    # its deliveries wait (nothing is sent unsigned). Stopped gracefully, it gives them back
    # at once, and a worker with the new key delivers them without waiting for a lease.
    hook = await make_webhook(api, receiver.url(), **ONLY_EVENTS)
    new_key, _ = await rotate_key(settings, "env")
    await post_events(api, "jane@example.com")
    caplog.set_level(logging.ERROR, logger="consent_relay")

    async def refused() -> bool:
        return any(
            hook["id"] in record.getMessage() and "cannot be prepared" in record.getMessage()
            for record in caplog.records
        )

    async with running(ctx):  # the old key
        await eventually(refused, what="the old-key worker to give up on the webhook")
    assert receiver.received == []
    assert await delivery_statuses(ctx) == ["pending"]
    deadline = 2 * ctx.settings.request_timeout + 2  # well under the 60 s lease
    async with running(rekeyed_context(ctx, new_key)):
        await receiver.wait_for(1, timeout=deadline)
        await eventually(lambda: _delivered(ctx, 1), what="the delivery")
    Webhook(hook["signing_secret"]).verify(receiver.received[0].body, receiver.received[0].headers)
