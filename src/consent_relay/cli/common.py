"""What every command shares: the consoles, running a use case against the configured
database, error output, and the process-count and admin-token helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from consent_relay import crypto, errors
from consent_relay.runtime import Context
from consent_relay.settings import Settings

console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def run_use_case(work: Callable[[Context], Awaitable[T]]) -> T:
    """Run one use case against the configured database, migrated first."""
    from consent_relay.runtime import build_context

    async def main() -> T:
        ctx = build_context(Settings())
        try:
            await ctx.store.migrate()
            return await work(ctx)
        finally:
            await ctx.store.close()

    try:
        return asyncio.run(main())
    except errors.ConsentRelayError as exc:
        err.print(f"[red]error:[/red] {escape(exc.detail)}", highlight=False)
        for field_error in exc.errors:
            err.print(f"  {field_error.field}: {escape(field_error.message)}", highlight=False)
        raise typer.Exit(1) from exc


def process_count(requested: int | None, settings: Settings, what: str, default: int | None) -> int:
    """How many processes to run; a refusal (N > 1 on SQLite) says why and exits 2."""
    from rich.markup import escape as plain

    from consent_relay import processes

    try:
        return processes.process_count(
            requested, sqlite=settings.is_sqlite, what=what, default=default
        )
    except processes.ProcessCountRefused as exc:
        err.print(f"[red]error:[/red] {plain(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc


def print_admin_token(settings: Settings) -> None:
    token, generated = crypto.admin_token(settings)
    if generated:
        console.print(
            f"[bold]Admin token[/bold] (saved in {settings.data_dir}/admin.token): {token}"
        )


def refused(exc: errors.ConsentRelayError) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(exc.detail)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1) from exc


WebhookId = Annotated[str, typer.Argument(help="The webhook's id (wh_...).")]
