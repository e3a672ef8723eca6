"""The attempts' metrics counted a batch at a time (metrics.AttemptTally) expose what
prometheus-client's Counter and Histogram, which they replace, exposed for the same attempts:
the same names, labels, buckets and values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consent_relay.metrics import AttemptTally

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")  # when each started: not the same moment
    }


def _reference(attempts: list[tuple[str, int]]) -> Samples:
    registry = CollectorRegistry()
    counter = Counter(
        "consent_relay_delivery_attempts_total", "attempts", ["outcome"], registry=registry
    )
    histogram = Histogram(
        "consent_relay_attempt_duration_seconds",
        "durations",
        buckets=AttemptTally.BUCKETS,
        registry=registry,
    )
    for code, duration_ms in attempts:
        counter.labels(code).inc()
        histogram.observe(duration_ms / 1000)
    return _samples(registry)


@pytest.mark.parametrize(
    "batches",
    [
        [[("ok", 3)]],
        [[("ok", 3), ("ok", 7), ("E_HTTP", 120)], [("E_TIMEOUT", 10_000), ("ok", 45_000)]],
        # on a bound (le is "at most"), just past one, zero, and well past the last
        [[("ok", 5), ("ok", 6), ("ok", 0), ("ok", 10), ("ok", 30_000), ("ok", 30_001)]],
        [[("ok", 250)], [], [("E_CONNECTION", 2_500), ("E_CONNECTION", 1)]],
    ],
)
def test_a_tally_exposes_what_the_counter_and_histogram_did(
    batches: list[list[tuple[str, int]]],
) -> None:
    tally = AttemptTally()
    registry = CollectorRegistry()
    registry.register(tally)
    for batch in batches:
        tally.add(batch)
    got, expected = _samples(registry), _reference([a for batch in batches for a in batch])
    total = ("consent_relay_attempt_duration_seconds_sum", ())
    # the sum: the tally adds whole milliseconds, the histogram each float in turn
    assert got.pop(total) == pytest.approx(expected.pop(total))
    assert got == expected


def test_an_empty_tally_exposes_zero_buckets_and_no_outcome() -> None:
    registry = CollectorRegistry()
    registry.register(AttemptTally())
    samples = _samples(registry)
    assert samples[("consent_relay_attempt_duration_seconds_count", ())] == 0
    assert samples[("consent_relay_attempt_duration_seconds_bucket", (("le", "+Inf"),))] == 0
    assert not [name for name, _ in samples if name.startswith("consent_relay_delivery")]
