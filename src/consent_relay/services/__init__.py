"""Use cases shared by the API, the CLI and the dashboard.

Each function takes the ``Context`` and validated input, runs one write transaction (the change,
its messages and their deliveries together: the outbox) and returns API-shaped JSON.
"""
