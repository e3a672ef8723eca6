"""The ledger's hash chain: pure functions, no I/O.

Each organization's ledger is a chain: entry ``n`` holds the hash of entry ``n - 1``
(``prev_hash``; the first entry holds ``GENESIS``) and its own ``entry_hash``, the SHA-256 of
that previous hash and the entry's own fields in one fixed encoding (``canonical``). Changing
any field of any entry, removing an entry or swapping two breaks the chain at that entry, and
``verify`` names the first one broken. (Whoever can rewrite the whole table can rewrite the
whole chain: the chain proves the ledger consistent with itself, and with any copy taken
earlier, e.g. an export or a head hash written down elsewhere.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

GENESIS = "0" * 64  # the prev_hash of an organization's first entry
# An entry's fields in their fixed order (``values``), and with its two hashes after them.
Values = tuple[str, int, str, str, str, str, str, str, int | None, str | None]
Row = tuple[str, int, str, str, str, str, str, str, int | None, str | None, str, str]


@dataclass(frozen=True)
class EntryFields:
    """What an entry attests: which message went where, when, with what answer and body."""

    organization_id: str
    seq: int
    message_id: str
    delivery_id: str
    type: str
    user_id: str
    webhook_id: str
    delivered_at: str
    status_code: int | None
    payload_sha256: str | None


@dataclass(frozen=True)
class Entry:
    fields: EntryFields
    prev_hash: str
    entry_hash: str


def values(fields: EntryFields) -> Values:
    """An entry's fields in their fixed order: the order hashed and the ledger's columns."""
    return (
        fields.organization_id,
        fields.seq,
        fields.message_id,
        fields.delivery_id,
        fields.type,
        fields.user_id,
        fields.webhook_id,
        fields.delivered_at,
        fields.status_code,
        fields.payload_sha256,
    )


def canonical(fields: EntryFields) -> bytes:
    """The fixed encoding hashed: a JSON array in a fixed field order (no keys to sort, no
    whitespace; orjson writes the same bytes for the same values, on every platform)."""
    return orjson.dumps(values(fields))


def entry_hash(prev_hash: str, fields: EntryFields) -> str:
    """SHA-256 (hex) of the previous entry's hash, a newline and the entry's fields."""
    return hash_values(prev_hash, values(fields))


def hash_values(prev_hash: str, entry: Values) -> str:
    """``entry_hash`` of an entry given as its ``values``: the delivery path's, which chains
    a batch's entries as tuples in the ledger's column order, no objects between."""
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + orjson.dumps(entry)).hexdigest()


def chain(prev_hash: str, entries: Iterable[EntryFields]) -> list[Entry]:
    """Chain ``entries`` (in sequence order) after the entry whose hash is ``prev_hash``."""
    listed = list(entries)
    rows = chain_values(prev_hash, [values(fields) for fields in listed])
    return [Entry(fields, row[-2], row[-1]) for fields, row in zip(listed, rows, strict=True)]


def chain_values(prev_hash: str, entries: Iterable[Values]) -> list[Row]:
    """``chain`` for entries given as ``values``: each comes back as its ledger row, its
    values followed by ``prev_hash`` and ``entry_hash``."""
    rows: list[Row] = []
    for entry in entries:
        digest = hash_values(prev_hash, entry)
        rows.append((*entry, prev_hash, digest))
        prev_hash = digest
    return rows


@dataclass(frozen=True)
class Break:
    """The first entry where the chain does not hold, and why."""

    organization_id: str
    seq: int
    reason: str

    def describe(self) -> str:
        return f"organization {self.organization_id}: entry {self.seq}: {self.reason}"


@dataclass
class Verifier:
    """Checks one organization's entries fed in sequence order (streamed: a ledger of any
    size in constant memory). ``first_break`` is the first entry broken, if any."""

    organization_id: str
    count: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    first_break: Break | None = None

    def feed(self, entry: Entry) -> Break | None:
        if self.first_break is not None:
            return self.first_break
        fields = entry.fields
        reason = None
        if fields.seq != self.last_seq + 1:
            reason = (
                f"sequence number {fields.seq} follows {self.last_seq} "
                f"(entries {self.last_seq + 1}..{fields.seq - 1} missing or moved)"
                if fields.seq > self.last_seq + 1
                else f"sequence number {fields.seq} follows {self.last_seq} (out of order)"
            )
        elif entry.prev_hash != self.last_hash:
            reason = "prev_hash is not the previous entry's hash (an entry removed or moved)"
        elif entry.entry_hash != entry_hash(entry.prev_hash, fields):
            reason = "entry_hash does not match its fields (the entry was changed)"
        self.count += 1
        if reason is not None:
            self.first_break = Break(self.organization_id, fields.seq, reason)
            return self.first_break
        self.last_seq, self.last_hash = fields.seq, entry.entry_hash
        return None

    def finish(self, head: tuple[int, str] | None) -> Break | None:
        """Compare the end of the chain with the organization's head (``last_seq``,
        ``last_hash``): entries removed from the end leave the chain shorter than its head."""
        if self.first_break is not None:
            return self.first_break
        if head is None:
            if self.count:
                self.first_break = Break(self.organization_id, self.last_seq, "no ledger head")
            return self.first_break
        last_seq, last_hash = head
        if (last_seq, last_hash) != (self.last_seq, self.last_hash):
            self.first_break = Break(
                self.organization_id,
                self.last_seq + 1,
                f"the head says {last_seq} entries, ending in {last_hash[:12]}…; the chain "
                f"ends at {self.last_seq} (entries removed from the end)",
            )
        return self.first_break


def verify(
    organization_id: str, entries: Sequence[Entry], head: tuple[int, str] | None
) -> Break | None:
    """The first broken entry of one organization's ledger (in sequence order), or None."""
    verifier = Verifier(organization_id)
    for entry in entries:
        if verifier.feed(entry) is not None:
            break
    return verifier.finish(head)
