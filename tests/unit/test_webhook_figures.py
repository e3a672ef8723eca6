"""``metrics.WebhookFigures`` writes the per-webhook gauges out as prometheus-client's own
labelled ``Gauge``s would (the library as the reference: the same text, byte for byte), from
figures kept as read, with no child object a webhook and figure."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from consent_relay import metrics
from consent_relay.storage.records import QueueFigures

NOW_MS = 1_800_000_000_000

QUEUES = [
    QueueFigures("wh_a", 3, NOW_MS - 12_500, 0),
    QueueFigures("wh_b", 0, None, 7),
    QueueFigures("wh_c", 1, NOW_MS + 5_000, 2),  # due later than now: age 0
    QueueFigures('wh_"odd"\\name\n', 2, NOW_MS - 1, 1),  # escaped as the library escapes
]
SUPERSEDED = [("wh_b", 4), ('wh_"odd"\\name\n', 1)]


def reference(queues: list[QueueFigures], superseded: list[tuple[str, int]]) -> bytes:
    """The same figures through labelled ``Gauge``s (what the metrics were before)."""
    registry = CollectorRegistry(auto_describe=True)
    labels = ["webhook_id"]
    depth = Gauge(
        "consent_relay_queue_depth",
        "Deliveries waiting (pending), per webhook.",
        labels,
        registry=registry,
    )
    age = Gauge(
        "consent_relay_oldest_due_age_seconds",
        "How long the oldest due delivery has been waiting, per webhook (0 when none is due).",
        labels,
        registry=registry,
    )
    dead = Gauge(
        "consent_relay_dead_letters", "Dead letters kept, per webhook.", labels, registry=registry
    )
    kept = Gauge(
        "consent_relay_deliveries_superseded",
        "Dead letters superseded by a later delivered message (never replayed in bulk), per"
        " webhook.",
        labels,
        registry=registry,
    )
    for queue in queues:
        oldest = queue.oldest_due_ms
        depth.labels(queue.webhook_id).set(queue.pending)
        age.labels(queue.webhook_id).set(
            max(0.0, (NOW_MS - oldest) / 1000) if oldest is not None else 0.0
        )
        dead.labels(queue.webhook_id).set(queue.dead)
    for webhook_id, count in superseded:
        kept.labels(webhook_id).set(count)
    return generate_latest(registry)


def written(queues: list[QueueFigures], superseded: list[tuple[str, int]]) -> bytes:
    registry = CollectorRegistry(auto_describe=True)
    figures = metrics.WebhookFigures()
    registry.register(figures)
    figures.update(queues, superseded, NOW_MS)
    return generate_latest(registry)


@pytest.mark.parametrize(
    ("queues", "superseded"),
    [
        (QUEUES, SUPERSEDED),
        (QUEUES[:1], []),
        ([], []),
        ([QueueFigures(f"wh_{n:04d}", n % 5, NOW_MS - n, n % 3) for n in range(300)], []),
    ],
)
def test_the_figures_are_written_as_labelled_gauges_write_them(
    queues: list[QueueFigures], superseded: list[tuple[str, int]]
) -> None:
    assert written(queues, superseded) == reference(queues, superseded)


def test_a_scrape_shows_the_last_figures_read_only() -> None:
    """A webhook gone since the last read is gone from the metrics (as ``Gauge.clear()``
    made it)."""
    registry = CollectorRegistry(auto_describe=True)
    figures = metrics.WebhookFigures()
    registry.register(figures)
    figures.update(QUEUES, SUPERSEDED, NOW_MS)
    figures.update(QUEUES[:1], [], NOW_MS)
    text = generate_latest(registry).decode()
    assert 'webhook_id="wh_a"' in text
    assert "wh_b" not in text
    assert text == reference(QUEUES[:1], []).decode()
