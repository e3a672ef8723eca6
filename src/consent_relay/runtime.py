"""The runtime container: what every use case and every worker needs, built once per process
(settings, storage, the secret box, the queue clock and a wake-up signal).

It sits below both ``services`` and ``delivery`` (see the package graph in
``consent_relay/__init__.py``), so neither reaches into the other for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from consent_relay import crypto
from consent_relay.clock import Clock
from consent_relay.crypto import SecretBox
from consent_relay.settings import Settings
from consent_relay.storage.store import Store

if TYPE_CHECKING:  # for the annotation only: nothing of services is imported at run time
    from consent_relay.services.ingest import EventWriter


@dataclass
class Context:
    settings: Settings
    store: Store
    box: SecretBox
    # Set when new deliveries were queued, so an in-process worker wakes at once.
    work_queued: asyncio.Event = field(default_factory=asyncio.Event)
    clock_ms: Callable[[], int] = field(default_factory=Clock)
    # The process's group commit for consent events (services.ingest.writer), made on use.
    event_writer: EventWriter | None = None

    def notify_enqueued(self) -> None:
        self.work_queued.set()


def build_context(settings: Settings) -> Context:
    """The context of a running process: its database and its secret key."""
    store = Store(settings.resolved_database_url)
    return Context(settings=settings, store=store, box=crypto.secret_box(settings))
