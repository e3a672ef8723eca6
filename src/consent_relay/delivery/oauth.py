"""OAuth 2.0 client credentials toward the receiver (RFC 6749 §4.4), as a small flow object.

One ``TokenSource`` per webhook owns its cached token and a lock: however many deliveries
wait for a token, one request fetches it. The token is kept until shortly before
``expires_in`` runs out (an hour when the server does not say). ``invalidate(token)`` drops it
only if it is still the cached one, so a burst of 401s costs a single new token.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from consent_relay import metrics
from consent_relay.delivery import outcome
from consent_relay.security import targets

DEFAULT_EXPIRES_IN = 3600.0
MAX_REFRESH_MARGIN = 60.0
NO_USER_AGENT = ("User-Agent",)  # token requests send none (as before: see sender)


class TokenError(Exception):
    """The token endpoint failed or answered something that is not a token."""

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        body: str | None = None,
        body_bytes: int | None = None,
    ):
        # Stored with the attempt: the message may quote the endpoint's answer
        # (``token_type``), the body is its answer; both are made storable.
        message = outcome.storable(message)
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = None if body is None else outcome.storable(body)
        self.body_bytes = body_bytes


@dataclass(frozen=True)
class Credentials:
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)  # never in a log line or a traceback
    scope: str | None = None
    audience: str | None = None
    client_auth_method: str = "client_secret_post"
    token_request_headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_settings(cls, settings: dict[str, Any], secret: str) -> Credentials:
        return cls(
            token_url=settings["token_url"],
            client_id=settings["client_id"],
            client_secret=secret,
            scope=settings.get("scope"),
            audience=settings.get("audience"),
            client_auth_method=settings.get("client_auth_method") or "client_secret_post",
            token_request_headers=tuple(
                sorted((settings.get("token_request_headers") or {}).items())
            ),
        )


def token_request(credentials: Credentials) -> tuple[dict[str, str], dict[str, str]]:
    """The form and headers of a client-credentials token request (pure)."""
    form = {"grant_type": "client_credentials"}
    if credentials.scope:
        form["scope"] = credentials.scope
    if credentials.audience:
        form["audience"] = credentials.audience
    headers = {"Accept": "application/json", **dict(credentials.token_request_headers)}
    if credentials.client_auth_method == "client_secret_basic":
        # RFC 6749 §2.3.1: form-urlencode each part before joining them.
        pair = (
            f"{quote(credentials.client_id, safe='')}:{quote(credentials.client_secret, safe='')}"
        )
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form["client_id"] = credentials.client_id
        form["client_secret"] = credentials.client_secret
    return form, headers


def parse_token(status: int, raw: bytes) -> tuple[str, float]:
    """``(access_token, expires_in)`` from a token response, or TokenError (pure)."""
    body, size = outcome.keep_body(raw)
    if not 200 <= status < 300:
        raise TokenError(f"token endpoint answered HTTP {status}", status, body, size)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TokenError(
            "token endpoint answered something that is not JSON", status, body, size
        ) from exc
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise TokenError("token endpoint answered no access_token", status, body, size)
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError(f"unsupported token_type {token_type!r}", status, body, size)
    expires_in = data.get("expires_in", DEFAULT_EXPIRES_IN)
    try:
        lifetime = float(expires_in)
    except (TypeError, ValueError):
        lifetime = DEFAULT_EXPIRES_IN
    return token, max(lifetime, 0.0)


def refresh_margin(expires_in: float) -> float:
    """Refresh a little before expiry: 10% of the lifetime, at most a minute."""
    return min(MAX_REFRESH_MARGIN, expires_in * 0.1)


class TokenSource:
    def __init__(
        self,
        credentials: Credentials,
        *,
        allowed: Sequence[targets.Network] = (),
        proxy: str | None = None,
        require_https: bool = False,
        clock: Any = time.monotonic,
    ) -> None:
        self.credentials = credentials
        self.allowed = allowed
        self.require_https = require_https
        self.proxy = proxy
        self.clock = clock
        self._token: str | None = None
        self._valid_until = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0  # token requests made, for tests and metrics

    def cached(self) -> str | None:
        if self._token is not None and self.clock() < self._valid_until:
            return self._token
        return None

    async def token(self, session: aiohttp.ClientSession) -> str:
        current = self.cached()
        if current is not None:
            return current
        async with self._lock:  # one request at a time; the others get its token
            current = self.cached()
            if current is not None:
                return current
            token, expires_in = await self._fetch(session)
            self._token = token
            self._valid_until = self.clock() + expires_in - refresh_margin(expires_in)
            return token

    def invalidate(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _fetch(self, session: aiohttp.ClientSession) -> tuple[str, float]:
        # Refused before any request: the client secret never goes where it may not.
        targets.check_url(
            self.credentials.token_url, self.allowed, require_https=self.require_https
        )
        self.fetches += 1
        try:
            token = await self._request(session)
        except Exception:
            metrics.token_fetches.labels("error").inc()
            raise
        metrics.token_fetches.labels("ok").inc()
        return token

    async def _request(self, session: aiohttp.ClientSession) -> tuple[str, float]:
        form, headers = token_request(self.credentials)
        async with session.post(
            self.credentials.token_url,
            data=form,
            headers=headers,
            skip_auto_headers=NO_USER_AGENT,  # (sender.make_session: aiohttp's is not sent)
            allow_redirects=False,
            proxy=self.proxy,
        ) as response:
            raw = await response.content.read(64 * 1024)
            return parse_token(response.status, raw)
