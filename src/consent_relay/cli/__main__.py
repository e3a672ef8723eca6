"""``python -m consent_relay.cli``."""

from consent_relay.cli import app

app()
