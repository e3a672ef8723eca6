"""Consent Relay: consent events API with reliable webhook delivery."""

__version__ = "0.1.0"
