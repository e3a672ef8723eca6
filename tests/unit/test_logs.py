"""JSON log lines."""

from __future__ import annotations

import logging

import orjson

from consent_relay.logs import JsonFormatter


def test_one_json_object_per_line() -> None:
    record = logging.LogRecord(
        "consent_relay.worker", logging.WARNING, "x", 1, "hello %s", ("you",), None
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "warning"
    assert entry["logger"] == "consent_relay.worker"
    assert entry["message"] == "hello you"
    assert entry["time"].endswith("+00:00")
