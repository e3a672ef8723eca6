"""Consent Relay: consent events API with reliable webhook delivery.

The package graph is one-way; a module imports only from its own layer or the layers below
(tests/unit/test_package_graph.py checks it)::

    api, dashboard, cli, runner, processes, demo   entry points: HTTP, commands,
           |            \\                                      the worker processes
        services       delivery                                 use cases | the worker's engine
           |      \\   /    |
           |     runtime   |                                    the per-process container
           |    /   |   \\  |
           |  clock  metrics                                    the queue clock, gauges
           |  /
        storage                                                 every SQL statement
           |
        domain, security, schemas, crypto, settings, errors ... pure rules and plumbing

- ``domain/`` (user-state fold, rules, payloads, ledger chain) imports only itself.
- ``security/`` (Standard Webhooks signing, the SSRF guard, opening a webhook's secrets) sits
  below both services and delivery, which both need it.
- ``storage/`` holds every statement (no SQL anywhere else) and hands out records
  (``storage/records.py``), never rows.
- ``runtime`` (``Context``: settings, store, secret box, clock, wake-up) sits below services
  and delivery, so the worker does not reach into services for it.
- ``delivery/`` (claim, send, record) and ``services/`` (use cases) are siblings: neither
  imports the other. ``runner`` (a worker process: the worker, its clock sync, the purge
  pass) is an entry point over both.
"""

__version__ = "0.1.0"
