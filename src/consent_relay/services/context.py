"""Moved to ``consent_relay.runtime``, below services and delivery. This re-export stays only
until the modules being edited by others meanwhile (services/privacy.py,
tests/integration/test_erasure.py) are committed with their new import; nothing else uses it."""

from consent_relay.runtime import Context as Context
from consent_relay.runtime import build_context as build_context
