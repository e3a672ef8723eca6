"""``consent-relay ledger verify|export`` and ``consent-relay users erase``: the privacy
commands (added to the app in cli/__init__.py)."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer
from rich.markup import escape

from consent_relay.cli.common import console, err, run_use_case
from consent_relay.domain.timefmt import normalize_ts
from consent_relay.runtime import Context
from consent_relay.services import ledger

ledger_app = typer.Typer(
    help="The accountability ledger: verify its hash chain, export it.", no_args_is_help=True
)
users_app = typer.Typer(help="Users: erase one's personal data.", no_args_is_help=True)

Organization = Annotated[
    str | None,
    typer.Option("--org", help="One organization's id (default: every organization)."),
]


@ledger_app.command("verify")
def ledger_verify(org: Organization = None) -> None:
    """Recompute every organization's hash chain; exit 1 naming the first broken entry
    (changed, removed or reordered)."""
    checked = run_use_case(lambda ctx: ledger.verify(ctx, org))
    total = sum(v.entries for v in checked)
    broken = [v for v in checked if v.first_break is not None]
    for v in broken:
        assert v.first_break is not None
        err.print(f"[red]broken:[/red] {escape(v.first_break.describe())}", highlight=False)
    if broken:
        raise typer.Exit(1)
    console.print(f"{total} entries, chain intact", highlight=False)


@ledger_app.command("export")
def ledger_export(
    since: Annotated[
        str | None,
        typer.Option(help="Entries delivered at or after this time (ISO-8601, UTC if no zone)."),
    ] = None,
    org: Organization = None,
) -> None:
    """Write the ledger as NDJSON (one entry a line, with its organization) on stdout."""
    try:
        since_ts = normalize_ts(since) if since is not None else None
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO-8601 time: {since!r}", param_hint="--since") from exc

    async def work(ctx: Context) -> int:
        count = 0
        out = sys.stdout.buffer
        async for entry in ledger.export(ctx, org, since_ts):
            out.write(orjson.dumps(entry) + b"\n")
            count += 1
        out.flush()
        return count

    count = run_use_case(work)
    err.print(f"{count} entries exported", highlight=False)


@users_app.command("erase")
def users_erase(
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    org: Annotated[str, typer.Option("--org", help="The organization's id.")],
) -> None:
    """Delete the user and erase their personal data (README, "Privacy"); also for a user
    deleted before, whose payloads are still stored. Pending deliveries go out first."""
    from consent_relay.services import privacy

    purged = run_use_case(lambda ctx: privacy.erase_user(ctx, org, user_id))
    console.print(
        f"user {escape(user_id)} erased ({purged} more payloads purged now; pending "
        "deliveries keep theirs until delivered)",
        highlight=False,
    )
