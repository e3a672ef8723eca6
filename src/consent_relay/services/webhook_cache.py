"""The organization's webhooks for fan-out, kept in memory while they do not change.

Every change to an organization's webhooks bumps its stamp in the change's own transaction
(``storage/webhook_versions.py``). A write that fans out reads the stamp inside its own
transaction, in one short statement: when it is the stamp of the list this process keeps,
that list is the one the transaction would have read; else the same statement brings the
list, which replaces the kept one. So a webhook created (changed, deleted) and committed, by
this process or any other, is seen by every transaction that starts after its commit, in
every process: nothing waits on a notice that could arrive late.

The lists are kept per database handle of the process (a ``Store``'s engine, so two stores
on one database keep two, as two processes do) and per organization. The records are shared
by every caller: read them, never change them.
"""

from __future__ import annotations

import weakref
from typing import Any

from consent_relay.storage import webhook_versions
from consent_relay.storage.records import WebhookRecord
from consent_relay.storage.tx import Tx

Kept = dict[str, tuple[int, list[WebhookRecord]]]  # organization -> (stamp, its webhooks)
_kept: weakref.WeakKeyDictionary[Any, Kept] = weakref.WeakKeyDictionary()


async def webhooks_for(tx: Tx, org_id: str, stamp: int | None = None) -> list[WebhookRecord]:
    """The organization's webhooks as ``tx`` sees them (creation order), from memory when
    their stamp has not moved since this process read them. ``stamp``: the stamp ``tx`` has
    just read along with something else (the write path's batch read): when it is the kept
    list's, no statement at all."""
    kept = _kept.setdefault(webhook_versions.database(tx), {})
    cached = kept.get(org_id)
    if stamp is not None and cached is not None and cached[0] == stamp:
        return list(cached[1])
    stamp, hooks = await webhook_versions.read(tx, org_id, None if cached is None else cached[0])
    if hooks is None:  # the stamp this process keeps the list of
        assert cached is not None
        return list(cached[1])
    newest = kept.get(org_id)  # another transaction of this process may have kept one since
    if stamp is not None and (newest is None or stamp > newest[0]):
        kept[org_id] = (stamp, hooks)
    return list(hooks)
