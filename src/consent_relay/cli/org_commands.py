"""``consent-relay orgs`` and ``consent-relay keys``: organizations and their API keys."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from consent_relay import errors
from consent_relay.cli.common import (
    console,
    run_use_case,
)
from consent_relay.runtime import Context
from consent_relay.schemas import OrganizationIn
from consent_relay.services import orgs

orgs_app = typer.Typer(help="Organizations and their API keys.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of an organization.", no_args_is_help=True)


@orgs_app.command("create")
def orgs_create(
    org_id: Annotated[str, typer.Argument(help="Organization id: lowercase letters, digits, - _")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
) -> None:
    """Create an organization and print its first API key (shown once)."""

    async def work(ctx: Context) -> dict[str, Any]:
        try:
            data = OrganizationIn(id=org_id, name=name)
        except ValueError as exc:
            raise errors.Unprocessable(f"invalid organization id {org_id!r}: {exc}") from exc
        return await orgs.create_organization(ctx, data)

    result = run_use_case(work)
    console.print(f"organization [bold]{result['organization']['id']}[/bold] created")
    console.print(f"API key (shown once): {result['api_key']}")


@orgs_app.command("list")
def orgs_list() -> None:
    """List organizations."""
    rows = run_use_case(orgs.list_organizations)
    table = Table("id", "name", "created_at")
    for row in rows:
        table.add_row(row["id"], row["name"], row["created_at"])
    console.print(table)


@keys_app.command("create")
def keys_create(
    org_id: Annotated[str, typer.Argument(help="Organization id.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create another API key for an organization (shown once)."""
    result = run_use_case(lambda ctx: orgs.create_key(ctx, org_id, name))
    console.print(f"API key {result['id']} (shown once): {result['api_key']}")


@keys_app.command("list")
def keys_list(org_id: Annotated[str, typer.Argument(help="Organization id.")]) -> None:
    """List an organization's API keys (their prefixes; keys are stored hashed)."""
    rows = run_use_case(lambda ctx: orgs.list_keys(ctx, org_id))
    table = Table("id", "prefix", "name", "created", "revoked")
    for row in rows:
        table.add_row(
            row["id"], row["prefix"], row["name"], row["created_at"], row["revoked_at"] or ""
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")]) -> None:
    """Revoke an API key: it stops working at once."""
    run_use_case(lambda ctx: orgs.revoke_key(ctx, key_id))
    console.print(f"revoked {key_id}")
