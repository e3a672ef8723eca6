"""The ``consent-relay`` command (typer + rich), one module per group of commands:
``run_commands`` (serve, api, worker, migrate, demo), ``key_commands`` (generate-key,
rotate-secret-key), ``org_commands`` (orgs, keys), ``webhook_commands`` (webhooks,
dead-letters, deliveries) and ``privacy_commands`` (ledger, users). ``app``, the entry
point (``consent_relay.cli:app``), is assembled here."""

from __future__ import annotations

import typer

from consent_relay.cli import (
    key_commands,
    org_commands,
    privacy_commands,
    run_commands,
    webhook_commands,
)

app = typer.Typer(
    help="Consent Relay: consent events API with reliable, signed, ordered webhooks.",
    no_args_is_help=True,
)
app.command()(run_commands.serve)
app.command()(run_commands.api)
app.command()(run_commands.worker)
app.command()(run_commands.migrate)
app.command()(run_commands.demo)
app.command("generate-key")(key_commands.generate_key)
app.command("rotate-secret-key")(key_commands.rotate_secret_key)
app.add_typer(org_commands.orgs_app, name="orgs")
app.add_typer(org_commands.keys_app, name="keys")
app.add_typer(webhook_commands.dead_app, name="dead-letters")
app.add_typer(webhook_commands.deliveries_app, name="deliveries")
app.add_typer(webhook_commands.webhooks_app, name="webhooks")
app.add_typer(privacy_commands.ledger_app, name="ledger")
app.add_typer(privacy_commands.users_app, name="users")
