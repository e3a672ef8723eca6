"""Prometheus metrics (prometheus-client), one set per process.

Counters and histograms move as work happens; queue depth, the age of the oldest due
delivery and dead letters per webhook are read from the database when /metrics is scraped,
so they are right whichever process did the work. So is the number of broken webhooks (their
secrets cannot be opened with this process's key: their deliveries wait): alert on it above 0.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consent_relay.crypto import SecretBox
from consent_relay.security import webhook_secrets
from consent_relay.storage import flow, health
from consent_relay.storage.store import Store

REGISTRY = CollectorRegistry(auto_describe=True)

attempts = Counter(
    "consent_relay_delivery_attempts_total",
    "Delivery attempts by outcome (ok or an E_ code).",
    ["outcome"],
    registry=REGISTRY,
)
finished = Counter(
    "consent_relay_deliveries_finished_total",
    "Deliveries that left the queue, by final status (delivered or dead).",
    ["status"],
    registry=REGISTRY,
)
payloads_purged = Counter(
    "consent_relay_payloads_purged_total",
    "Message payloads purged by the workers, by reason (erased or expired).",
    ["reason"],
    registry=REGISTRY,
)
auto_replays = Counter(
    "consent_relay_auto_replays_total",
    "Dead letters replayed automatically once their webhook delivered again (auto_replay).",
    registry=REGISTRY,
)
attempt_seconds = Histogram(
    "consent_relay_attempt_duration_seconds",
    "Duration of one delivery attempt, token request included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
token_fetches = Counter(
    "consent_relay_oauth_token_fetches_total",
    "OAuth token requests made to receivers' authorization servers.",
    ["result"],
    registry=REGISTRY,
)
api_requests = Counter(
    "consent_relay_api_requests_total",
    "API requests by route template, method and status code.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
queue_depth = Gauge(
    "consent_relay_queue_depth",
    "Deliveries waiting (pending), per webhook.",
    ["webhook_id"],
    registry=REGISTRY,
)
oldest_due_age = Gauge(
    "consent_relay_oldest_due_age_seconds",
    "How long the oldest due delivery has been waiting, per webhook (0 when none is due).",
    ["webhook_id"],
    registry=REGISTRY,
)
dead_letters = Gauge(
    "consent_relay_dead_letters",
    "Dead letters kept, per webhook.",
    ["webhook_id"],
    registry=REGISTRY,
)

webhooks_paused = Gauge(
    "consent_relay_webhooks_paused",
    "Webhooks paused now because their receiver asked us to wait (Retry-After).",
    registry=REGISTRY,
)
webhooks_disabled = Gauge(
    "consent_relay_webhooks_disabled",
    "Webhooks disabled by the relay because their receiver answered 410 Gone.",
    registry=REGISTRY,
)
superseded = Gauge(
    "consent_relay_deliveries_superseded",
    "Dead letters superseded by a later delivered message (never replayed in bulk), per webhook.",
    ["webhook_id"],
    registry=REGISTRY,
)
webhooks_broken = Gauge(
    "consent_relay_webhooks_broken",
    "Webhooks whose secrets cannot be decrypted with the current key (deliveries wait).",
    registry=REGISTRY,
)


async def refresh_queue_gauges(store: Store, now_ms: int, box: SecretBox | None = None) -> None:
    """Read per-webhook queue figures from the database into the gauges; with ``box``, also
    count the webhooks that it cannot open."""
    async with store.read() as tx:
        figures = await health.queue_figures(tx)
        states = await flow.figures(tx, now_ms)
    for gauge in (queue_depth, oldest_due_age, dead_letters):
        gauge.clear()
    for queue in figures:
        oldest = queue.oldest_due_ms
        age = max(0.0, (now_ms - oldest) / 1000) if oldest is not None else 0.0
        queue_depth.labels(queue.webhook_id).set(queue.pending)
        oldest_due_age.labels(queue.webhook_id).set(age)
        dead_letters.labels(queue.webhook_id).set(queue.dead)
    superseded.clear()
    for webhook_id, _paused, _disabled, count in states:
        if count:
            superseded.labels(webhook_id).set(count)
    webhooks_paused.set(sum(paused for _id, paused, _disabled, _count in states))
    webhooks_disabled.set(sum(disabled for _id, _paused, disabled, _count in states))
    if box is not None:
        await refresh_broken_gauge(store, box)


async def refresh_broken_gauge(store: Store, box: SecretBox) -> None:
    async with store.read() as tx:
        hooks = await tx.list_all_webhooks()
    webhooks_broken.set(sum(webhook_secrets.broken_reason(box, hook) is not None for hook in hooks))
