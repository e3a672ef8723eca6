"""The version stamp of an organization's webhooks (``organizations.webhooks_version``).

Every change to an organization's webhooks bumps the stamp in the change's own transaction
(``bump``, called by ``Tx.insert_webhook``, ``update_webhook`` and ``delete_webhook``). The
bump is an UPDATE of the organization's row, so concurrent changes take its lock one after
the other and commit in the order of their stamps: every snapshot that sees stamp ``v`` sees
the same webhooks. A process may therefore keep the list it read at ``v`` and use it in any
later transaction that reads ``v`` again (``services/webhook_cache.py``).

``read`` gives the stamp and, only when it differs from the one the caller knows, the list,
both from one statement: one snapshot, so the pair is consistent even under PostgreSQL's
READ COMMITTED, where two statements of a transaction may see different commits.

Not stamped: ``storage.flow.disable`` (a 410 Gone sets ``enabled``/``disabled_reason``),
which fan-out does not look at (disabled webhooks still queue; ``services.outbox.matches``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import text

from consent_relay.storage import driver, mapping
from consent_relay.storage.records import WebhookRecord

if TYPE_CHECKING:
    from consent_relay.storage.tx import Tx

_BUMP = "UPDATE organizations SET webhooks_version = webhooks_version + 1 WHERE id = :org"
# One row (the stamp, webhook columns null) when the stamp is the known one or the
# organization has no webhooks; else one row per webhook, each with the stamp.
_READ = """
    SELECT o.webhooks_version AS stamp, w.*
    FROM organizations o
    LEFT JOIN webhooks w ON w.organization_id = o.id AND o.webhooks_version <> {known}
    WHERE o.id = {org}
    ORDER BY w.pk
"""
_NO_STAMP = -1  # known by a caller that has none (stamps start at 0)


class Stamped(NamedTuple):
    """The organization's webhook stamp (None: no such organization) and its webhooks, or
    None for them when the stamp is the one the caller knows."""

    stamp: int | None
    webhooks: list[WebhookRecord] | None


def database(tx: Tx) -> object:
    """This process's handle on the database ``tx`` runs on (its Store's engine): the key of
    what a process caches of the database's rows."""
    return tx.conn.engine


async def all_stamps(tx: Tx) -> dict[str, int]:
    """Every organization's stamp, by its id (one statement; a row an organization, none of
    its webhooks)."""
    result = await tx.conn.execute(text("SELECT id, webhooks_version FROM organizations"))
    return {str(row[0]): int(row[1]) for row in result}


async def bump(tx: Tx, org_id: str) -> None:
    """A new stamp for the organization's webhooks, committed with the change that calls it."""
    await tx.conn.execute(text(_BUMP), {"org": org_id})


async def read(tx: Tx, org_id: str, known: int | None) -> Stamped:
    """The organization's stamp, and its webhooks (in creation order) unless the stamp is
    ``known``. One statement; on PostgreSQL sent to asyncpg directly (the write path's)."""
    known_stamp = _NO_STAMP if known is None else known
    conn = await driver.postgres(tx)
    rows: list[Any]
    if conn is not None:
        records = await conn.fetch(_READ.format(known="$2", org="$1"), org_id, known_stamp)
        rows = [driver.Record(record) for record in records]
    else:
        result = await tx.conn.execute(
            text(_READ.format(known=":known", org=":org")), {"org": org_id, "known": known_stamp}
        )
        rows = list(result)
    if not rows:  # no such organization: nothing to stamp, the webhooks as they are
        return Stamped(None, await tx.list_webhooks(org_id))
    stamp = int(rows[0].stamp)
    if stamp == known:
        return Stamped(stamp, None)
    return Stamped(stamp, [mapping.webhook(row) for row in rows if row.pk is not None])
