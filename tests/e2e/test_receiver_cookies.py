"""A receiver's cookies are never kept: no delivery and no token request carries a Cookie.

The worker's one HTTP session serves every organization's webhooks. Had it kept the cookies
receivers set (aiohttp's default jar does, for host names), one organization's receiver
would see another's session cookie on the next delivery to the same host (two customers of
one SaaS receiver, say), and a receiver could fill the jar. Deliveries, like Svix's and
Stripe's, are stateless: a ``Set-Cookie`` is ignored.

The receiver is reached as ``localhost``: aiohttp's jar refuses cookies from a bare IP
address, so ``127.0.0.1`` would hide the defect.
"""

from __future__ import annotations

import httpx
import orjson
import pytest
from aiohttp import web

from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn
from consent_relay.services import orgs
from consent_relay.settings import Settings
from tests.e2e.helpers import consent_event, make_webhook, post_event, running
from tests.receiver import Received, Receiver

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture(params=["direct", "aiohttp"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """Both delivery clients (``CONSENT_RELAY_DELIVERY_CLIENT``): aiohttp's session kept a
    jar; the direct client never had one."""
    return settings.model_copy(update={"delivery_client": request.param})


def sets_cookie(name: str) -> web.StreamResponse:
    response = web.Response(status=204)
    response.set_cookie(name, f"{name}-secret", path="/")
    return response


def token_with_cookie(_item: Received, _count: int) -> web.StreamResponse:
    body = orjson.dumps({"access_token": "t0ken", "token_type": "Bearer", "expires_in": 3600})
    response = web.Response(body=body, content_type="application/json")
    response.set_cookie("token-session", "from-the-token-endpoint", path="/")
    return response


async def test_no_delivery_carries_a_cookie_a_receiver_set(
    api: httpx.AsyncClient, client: httpx.AsyncClient, ctx: Context, receiver: Receiver
) -> None:
    base = f"http://localhost:{receiver.port}"
    receiver.behaviours["/acme"] = lambda _item, _count: sets_cookie("acme-session")
    receiver.behaviours["/token"] = token_with_cookie
    await make_webhook(api, f"{base}/acme", event_types=["event.created"])
    await make_webhook(
        api,
        f"{base}/acme-oauth",
        event_types=["event.created"],
        authentication={
            "token_url": f"{base}/token",
            "client_id": "relay",
            "client_secret": "s3cret",
        },
    )
    # A second organization's webhook on the same host.
    other = await orgs.create_organization(ctx, OrganizationIn(id="globex", name="Globex"))
    other_api = httpx.AsyncClient(
        transport=client._transport,
        base_url=client.base_url,
        headers={"Authorization": f"Bearer {other['api_key']}"},
    )
    async with other_api:
        await make_webhook(other_api, f"{base}/globex", event_types=["event.created"])
        async with running(ctx):
            for n in range(3):
                await post_event(api, consent_event(f"a{n}@example.com", "ads", True))
            await receiver.wait_for(3, "/acme")
            await receiver.wait_for(3, "/acme-oauth")
            await post_event(other_api, consent_event("g@example.com", "ads", True))
            await receiver.wait_for(1, "/globex")
            for n in range(3, 5):
                await post_event(api, consent_event(f"a{n}@example.com", "ads", True))
            await receiver.wait_for(5, "/acme")
            await receiver.wait_for(5, "/acme-oauth")

    assert receiver.at("/token"), "the OAuth webhook's token was never requested"
    # The receiver did set its cookies, on every answer from /acme and /token ...
    assert len(receiver.at("/acme")) == 5
    # ... and none came back: not to the receiver that set it, not to the token endpoint,
    # not to the other organization's webhook on the same host.
    carried = [(r.path, r.headers["Cookie"]) for r in receiver.received if "Cookie" in r.headers]
    assert carried == [], carried
    oauth_authorizations = {r.headers.get("Authorization") for r in receiver.at("/acme-oauth")}
    assert oauth_authorizations == {"Bearer t0ken"}
