"""The web dashboard at /dashboard (server-rendered with Jinja2).

Signed in with an API key (see ``session.py``); every page shows the organization of that key
only, through the same services as the HTTP API. Pages: the webhooks with their health, a
webhook's form, its detail (health, deliveries, dead letters with replay, test event, secret
rotation, sample payloads), a delivery with its attempts, recent consent events and users.

The pages are in ``auth_pages``, ``webhook_pages`` and ``browse_pages``, what they share
in ``web``; importing a page module registers its routes on ``web.router``.
"""

from __future__ import annotations

from consent_relay.dashboard import (  # noqa: F401  (importing a page module registers its routes)
    auth_pages,
    browse_pages,
    webhook_pages,
)
from consent_relay.dashboard.web import PREFIX as PREFIX
from consent_relay.dashboard.web import router as router
