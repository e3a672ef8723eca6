"""Dashboard sign-in: a signed session cookie, re-checked on the server on each request.

The cookie holds a random session id, the organization id, the SHA-256 hash of the API key
that signed in and a random CSRF token, signed with a timestamp (not encrypted: none of it is
secret from its owner) with itsdangerous under a key derived from the secret-box key. The
server refuses it after ``SESSION_MAX_AGE`` by its signed timestamp, whatever the browser
keeps. Every request looks the key hash up again, so revoking the API key ends its sessions
at once, and looks the session id up among the sign-outs (``dashboard_logouts``), so signing
out ends the session on the server: a copy of the cookie taken before is refused after it, by
every process. A deny-list of sign-outs rather than a table of live sessions: only a sign-out
writes (signing in stays a cookie), and the rows last only as long as the cookie could.
Every POST must carry the session's CSRF token in a hidden ``csrf_token`` field; the sign-in
form itself is protected the same way by a short-lived pre-session cookie. Cookies are
HttpOnly, SameSite=Strict, Path=/dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from consent_relay import crypto
from consent_relay.runtime import Context
from consent_relay.settings import Settings
from consent_relay.storage import logouts

SESSION_COOKIE = "cr_dashboard"
LOGIN_COOKIE = "cr_dashboard_login"
COOKIE_PATH = "/dashboard"
SESSION_MAX_AGE = 8 * 3600  # seconds; sign in again after a working day
# A sign-out is remembered this much longer than a cookie lasts: processes' clocks may differ.
LOGOUT_MARGIN = 3600
LOGIN_MAX_AGE = 3600  # the sign-in form stays usable this long
CSRF_FIELD = "csrf_token"
_DERIVATION_LABEL = b"consent-relay/dashboard-session/v1"


class NotSignedIn(Exception):
    """No valid session: the page redirects to the sign-in form."""


class CsrfRefused(Exception):
    """A POST without the session's CSRF token (answered 403)."""


@dataclass(frozen=True)
class Session:
    organization_id: str
    key_hash: str
    csrf_token: str
    session_id: str


def key_material(settings: Settings) -> bytes:
    """The secret-box key: ``settings.secret_key``, else the ``DATA_DIR/secret.key`` file
    (created as ``crypto.secret_box`` creates it when it does not exist yet)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.data_dir / "secret.key"
    if not path.exists():
        crypto.secret_box(settings)  # generates the file, mode 0600
    return path.read_text().strip().encode()


def derive_key(settings: Settings) -> bytes:
    """A key for the dashboard alone (HMAC-SHA256 of a fixed label under the box key), so a
    session signature never doubles as anything the secret box makes."""
    return hmac.new(key_material(settings), _DERIVATION_LABEL, hashlib.sha256).digest()


class Sessions:
    """Signs and checks the dashboard cookies of one application."""

    def __init__(self, settings: Settings) -> None:
        key = derive_key(settings)
        self._session = URLSafeTimedSerializer(key, salt="dashboard-session")
        self._login = URLSafeTimedSerializer(key, salt="dashboard-login")

    # -- the session -----------------------------------------------------------------------

    def issue(self, organization_id: str, key_hash: str) -> tuple[Session, str]:
        """A new session (fresh id and CSRF token) and its cookie value."""
        session = Session(
            organization_id, key_hash, secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        )
        value = self._session.dumps(
            {
                "o": session.organization_id,
                "k": session.key_hash,
                "c": session.csrf_token,
                "i": session.session_id,
            }
        )
        return session, value

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, if its signature is good and it has not expired
        (whether its API key still works and it was not signed out is checked by
        ``current``). A cookie without a session id (from before sign-outs were kept) is
        not a session: sign in again."""
        if not cookie:
            return None
        try:
            data: Any = self._session.loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:  # SignatureExpired is a BadSignature
            return None
        if not isinstance(data, dict):
            return None
        parts = (data.get("o"), data.get("k"), data.get("c"), data.get("i"))
        if not all(isinstance(part, str) and part for part in parts):
            return None
        org, key_hash, csrf, session_id = (str(part) for part in parts)
        return Session(org, key_hash, csrf, session_id)

    # -- the sign-in form ------------------------------------------------------------------

    def login_token(self, cookie: str | None) -> tuple[str, str]:
        """The sign-in form's CSRF token and the cookie value that holds it (the one the
        browser has, when still valid, so two open tabs both work)."""
        token = self.login_token_of(cookie)
        if token is None:
            token = secrets.token_urlsafe(32)
        return token, self._login.dumps(token)

    def login_token_of(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            token: Any = self._login.loads(cookie, max_age=LOGIN_MAX_AGE)
        except BadSignature:
            return None
        return token if isinstance(token, str) and token else None


def sessions_for(request: Request) -> Sessions:
    """The app's ``Sessions``, made on first use (the key is read once)."""
    state = request.app.state
    found: Sessions | None = getattr(state, "dashboard_sessions", None)
    if found is None:
        ctx: Context = state.context
        found = Sessions(ctx.settings)
        state.dashboard_sessions = found
    return found


async def current(request: Request) -> Session | None:
    """The signed-in session, or None. The API key must still be valid and still belong to
    the organization (a revoked key ends the session), and the session not signed out."""
    session = sessions_for(request).read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    ctx: Context = request.app.state.context
    async with ctx.store.read() as tx:
        owner = await tx.organization_for_key(session.key_hash)
        ended = owner is not None and await logouts.session_ended(tx, session.session_id)
    return session if owner == session.organization_id and not ended else None


async def end(request: Request, session: Session) -> None:
    """Sign out on the server: the session's cookie is refused from now on, wherever it was
    copied, until it would have expired anyway."""
    ctx: Context = request.app.state.context
    now_ms = int(time.time() * 1000)
    expires_ms = now_ms + (SESSION_MAX_AGE + LOGOUT_MARGIN) * 1000
    async with ctx.store.write() as tx:
        await logouts.end_session(tx, session.session_id, expires_ms=expires_ms, now_ms=now_ms)


async def require(request: Request) -> Session:
    session = await current(request)
    if session is None:
        raise NotSignedIn()
    return session


def check_csrf(expected: str, given: object) -> None:
    if not isinstance(given, str) or not hmac.compare_digest(expected.encode(), given.encode()):
        raise CsrfRefused()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name, path=COOKIE_PATH, httponly=True, samesite="strict", secure=_secure(request)
    )
