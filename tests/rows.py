"""Rows written straight into the schema (``storage.tamper.insert_rows``) by tests that need
a state without going through the service."""

from __future__ import annotations

from typing import Any


def webhook_row(webhook_id: str = "wh_1", organization_id: str = "acme") -> dict[str, Any]:
    """An enabled webhook of ``organization_id`` with every column the schema requires."""
    return {
        "id": webhook_id,
        "organization_id": organization_id,
        "url": "http://127.0.0.1:9/",
        "enabled": True,
        "flatten": False,
        "headers": "{}",
        "event_types": "[]",
        "regulations": "[]",
        "signing_secret": "x",
        "created_at": "now",
        "updated_at": "now",
    }
