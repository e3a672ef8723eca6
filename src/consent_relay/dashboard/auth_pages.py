"""Signing in to the dashboard with an API key, and out (sessions: ``session.py``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from consent_relay import crypto
from consent_relay.dashboard.session import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    LOGIN_MAX_AGE,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    CsrfRefused,
    check_csrf,
    clear_cookie,
    current,
    end,
    sessions_for,
    set_cookie,
)
from consent_relay.dashboard.web import (
    ctx_of,
    form_of,
    notice_of,
    posted_form,
    redirect,
    render,
    router,
)

# -- sign in and out -------------------------------------------------------------------------


def _login_page(
    request: Request, *, status_code: int = 200, error: str | None = None, notice: str | None = None
) -> HTMLResponse:
    token, cookie = sessions_for(request).login_token(request.cookies.get(LOGIN_COOKIE))
    response = render(
        "login.html",
        session=None,
        status_code=status_code,
        login_token=token,
        error=error,
        notice=notice,
    )
    set_cookie(response, request, LOGIN_COOKIE, cookie, LOGIN_MAX_AGE)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    if await current(request) is not None:
        return redirect("")
    return _login_page(request, notice=notice_of(request))


@router.post("/login")
async def login(request: Request) -> Response:
    form = await form_of(request)
    expected = sessions_for(request).login_token_of(request.cookies.get(LOGIN_COOKIE))
    try:
        if expected is None:
            raise CsrfRefused()
        check_csrf(expected, form.get(CSRF_FIELD))
    except CsrfRefused:
        return _login_page(
            request,
            status_code=403,
            error="The sign-in form expired or did not come from this page. Please sign in again.",
        )
    api_key = form.get("api_key")
    api_key = api_key.strip() if isinstance(api_key, str) else ""
    if not api_key:
        return _login_page(request, status_code=422, error="Enter an API key.")
    key_hash = crypto.hash_key(api_key)
    async with ctx_of(request).store.read() as tx:
        org_id = await tx.organization_for_key(key_hash)
    if org_id is None:
        return _login_page(
            request, status_code=401, error="That API key is unknown or has been revoked."
        )
    _session, cookie = sessions_for(request).issue(org_id, key_hash)
    response = redirect("")
    set_cookie(response, request, SESSION_COOKIE, cookie, SESSION_MAX_AGE)
    clear_cookie(response, request, LOGIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session, _form_data = await posted_form(request)
    await end(request, session)  # on the server: a copy of the cookie is refused too
    response = redirect("/login", notice="signed-out")
    clear_cookie(response, request, SESSION_COOKIE)
    return response
