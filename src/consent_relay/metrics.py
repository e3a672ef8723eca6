"""Prometheus metrics (prometheus-client), one set per process.

Counters and histograms move as work happens; queue depth, the age of the oldest due
delivery and dead letters per webhook are read from the database when /metrics is scraped,
so they are right whichever process did the work. So is the number of broken webhooks (their
secrets cannot be opened with this process's key: their deliveries wait): alert on it above 0.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from consent_relay.crypto import SecretBox
from consent_relay.security import webhook_secrets
from consent_relay.storage import flow, health, webhook_versions
from consent_relay.storage.records import QueueFigures
from consent_relay.storage.store import Store

REGISTRY = CollectorRegistry(auto_describe=True)

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


class AttemptTally:
    """``consent_relay_delivery_attempts_total`` (by outcome) and
    ``consent_relay_attempt_duration_seconds`` (a histogram), counted a batch of attempts at
    a time (the worker's recorder, ``add``), in plain integers, and exposed when scraped
    (a custom collector, prometheus-client's way for figures kept elsewhere). A
    ``Counter.inc`` and a ``Histogram.observe`` an attempt took a lock, a value object and a
    walk of the buckets each, about 1 CPU-us a delivery (issue 12's "metrics counted per
    batch"). The same names, labels and buckets as the Counter and Histogram they replace."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a scrape may run on another thread (--metrics-port)
        self._by_outcome: dict[str, int] = {}
        self._counts = [0] * (len(self.BUCKETS) + 1)  # per bucket, +Inf last (not cumulative)
        self._sum = 0.0
        self._created = time.time()

    def add(self, attempts: Iterable[tuple[str, int]]) -> None:
        """Count attempts given as (outcome code, duration in milliseconds)."""
        bounds, counts, by_outcome = self.BUCKETS, self._counts, self._by_outcome
        total = 0
        with self._lock:
            for code, duration_ms in attempts:
                by_outcome[code] = by_outcome.get(code, 0) + 1
                seconds = duration_ms / 1000
                counts[bisect.bisect_left(bounds, seconds)] += 1  # the first bound >= it
                total += duration_ms
            self._sum += total / 1000

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            by_outcome, counts, total = dict(self._by_outcome), list(self._counts), self._sum
        attempts = CounterMetricFamily(
            "consent_relay_delivery_attempts",
            "Delivery attempts by outcome (ok or an E_ code).",
            labels=["outcome"],
        )
        for code, count in sorted(by_outcome.items()):
            attempts.add_metric([code], count, created=self._created)
        yield attempts
        cumulative, buckets = 0, []
        for bound, count in zip((*self.BUCKETS, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), float(cumulative)))
        durations = HistogramMetricFamily(
            "consent_relay_attempt_duration_seconds",
            "Duration of one delivery attempt, token request included.",
        )
        durations.add_metric([], buckets, total)
        yield durations


def _le(bound: float) -> str:
    """A bucket's ``le`` label as prometheus-client writes it (``0.005``, ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(bound)


attempt_tally = AttemptTally()
REGISTRY.register(attempt_tally)
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
webhooks_broken = Gauge(
    "consent_relay_webhooks_broken",
    "Webhooks whose secrets cannot be decrypted with the current key (deliveries wait).",
    registry=REGISTRY,
)


class WebhookFigures:
    """The per-webhook gauges (``consent_relay_queue_depth``, ``_oldest_due_age_seconds``,
    ``_dead_letters``, ``_deliveries_superseded``): the figures last read from the database
    (``refresh_queue_gauges``, at each scrape of the API), written out when collected (a
    custom collector, as ``AttemptTally``). As labelled ``Gauge`` children, cleared and made
    again at each scrape, they cost prometheus-client's label checks and a child object a
    webhook and figure: about 330 ms of the API's event loop a scrape with 5,000 webhooks
    (docs/performance-log.md). The same names, help and labels as those gauges."""

    def __init__(self) -> None:
        # (the queues' figures, (webhook, superseded dead letters) of those with any, when)
        self._read: tuple[list[QueueFigures], list[tuple[str, int]], int] = ([], [], 0)

    def update(
        self, queues: list[QueueFigures], superseded: list[tuple[str, int]], now_ms: int
    ) -> None:
        self._read = (queues, superseded, now_ms)  # one assignment: a scrape sees one read

    def collect(self) -> Iterator[Metric]:
        queues, superseded, now_ms = self._read
        depth = GaugeMetricFamily(
            "consent_relay_queue_depth",
            "Deliveries waiting (pending), per webhook.",
            labels=["webhook_id"],
        )
        age = GaugeMetricFamily(
            "consent_relay_oldest_due_age_seconds",
            "How long the oldest due delivery has been waiting, per webhook (0 when none is due).",
            labels=["webhook_id"],
        )
        dead = GaugeMetricFamily(
            "consent_relay_dead_letters", "Dead letters kept, per webhook.", labels=["webhook_id"]
        )
        for queue in queues:
            oldest = queue.oldest_due_ms
            depth.add_metric([queue.webhook_id], queue.pending)
            age.add_metric(
                [queue.webhook_id],
                max(0.0, (now_ms - oldest) / 1000) if oldest is not None else 0.0,
            )
            dead.add_metric([queue.webhook_id], queue.dead)
        kept = GaugeMetricFamily(
            "consent_relay_deliveries_superseded",
            "Dead letters superseded by a later delivered message (never replayed in bulk), per"
            " webhook.",
            labels=["webhook_id"],
        )
        for webhook_id, count in superseded:
            kept.add_metric([webhook_id], count)
        yield from (depth, age, dead, kept)


webhook_figures = WebhookFigures()
REGISTRY.register(webhook_figures)


async def refresh_queue_gauges(store: Store, now_ms: int, box: SecretBox | None = None) -> None:
    """Read per-webhook queue figures from the database into the gauges; with ``box``, also
    count the webhooks that it cannot open."""
    async with store.read() as tx:
        figures = await health.queue_figures(tx)
        states = await flow.figures(tx, now_ms)
    webhook_figures.update(
        figures, [(webhook_id, count) for webhook_id, _p, _d, count in states if count], now_ms
    )
    webhooks_paused.set(sum(paused for _id, paused, _disabled, _count in states))
    webhooks_disabled.set(sum(disabled for _id, _paused, disabled, _count in states))
    if box is not None:
        await refresh_broken_gauge(store, box)


class BrokenWebhooks:
    """How many webhooks have secrets ``box`` cannot open (``consent_relay_webhooks_broken``),
    kept by organization beside the stamp of its webhooks (``storage.webhook_versions``,
    moved by every change to them in the change's transaction, the secret key's rotation
    included). Each count reads the organizations' stamps, and the webhooks of only those
    whose stamp moved since the last count: reading and opening every webhook took 113-124
    ms of the API's event loop a scrape with 5,000 of them (docs/performance-log.md).

    Under PostgreSQL's READ COMMITTED the webhooks are read after the stamps, so they are
    as new as the stamps or newer: one changed in between is kept with the older stamp and
    read again at the next count. A count for another database or another ``box`` starts
    afresh."""

    def __init__(self) -> None:
        self._database: object = None
        self._box: SecretBox | None = None
        self._known: dict[str, tuple[int, int]] = {}  # organization: (stamp, broken webhooks)

    async def count(self, store: Store, box: SecretBox) -> int:
        async with store.read() as tx:
            database = webhook_versions.database(tx)
            same = database is self._database and box is self._box
            known = self._known if same else {}
            stamps = await webhook_versions.all_stamps(tx)
            moved = [org for org, stamp in stamps.items() if known.get(org, (None, 0))[0] != stamp]
            hooks = await tx.webhooks_of_organizations(moved) if moved else []
        broken = dict.fromkeys(moved, 0)
        for hook in hooks:
            if webhook_secrets.broken_reason(box, hook) is not None:
                broken[hook.organization_id] += 1
        self._database, self._box = database, box
        self._known = {
            org: (stamp, broken[org] if org in broken else known[org][1])
            for org, stamp in stamps.items()
        }
        return sum(count for _stamp, count in self._known.values())


_broken = BrokenWebhooks()


async def refresh_broken_gauge(store: Store, box: SecretBox) -> None:
    webhooks_broken.set(await _broken.count(store, box))
