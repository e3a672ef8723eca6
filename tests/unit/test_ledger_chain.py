"""The ledger's hash chain (domain/ledger.py): hashing, chaining and the first break."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools

import pytest

from consent_relay.domain import ledger
from consent_relay.domain.ledger import GENESIS, Entry, EntryFields


def fields(n: int, **changes: object) -> EntryFields:
    base = EntryFields(
        organization_id="org_1",
        seq=n,
        message_id=f"msg_{n}",
        delivery_id=f"dlv_{n}",
        type="consent.updated",
        user_id="user_1",
        webhook_id="whk_1",
        delivered_at=f"2026-12-01T10:00:0{n % 10}.000000Z",
        status_code=200,
        payload_sha256="ab" * 32,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def good_chain(n: int = 5) -> list[Entry]:
    return ledger.chain(GENESIS, [fields(seq) for seq in range(1, n + 1)])


def head_of(entries: list[Entry]) -> tuple[int, str]:
    return entries[-1].fields.seq, entries[-1].entry_hash


def test_the_hash_is_fixed_for_fixed_fields() -> None:
    """The encoding must never change: a ledger written today verifies in ten years."""
    one = fields(1)
    assert ledger.canonical(one) == (
        b'["org_1",1,"msg_1","dlv_1","consent.updated","user_1","whk_1",'
        b'"2026-12-01T10:00:01.000000Z",200,"' + b"ab" * 32 + b'"]'
    )
    assert ledger.entry_hash(GENESIS, one) == ledger.entry_hash(GENESIS, fields(1))
    assert len(ledger.entry_hash(GENESIS, one)) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"seq": 2},
        {"message_id": "msg_x"},
        {"delivery_id": "dlv_x"},
        {"type": "user.deleted"},
        {"user_id": "user_2"},
        {"webhook_id": "whk_2"},
        {"delivered_at": "2026-12-01T10:00:02.000000Z"},
        {"status_code": 201},
        {"status_code": None},
        {"payload_sha256": "cd" * 32},
        {"payload_sha256": None},
        {"organization_id": "org_2"},
    ],
)
def test_every_field_is_in_the_hash(change: dict[str, object]) -> None:
    assert ledger.entry_hash(GENESIS, fields(1)) != ledger.entry_hash(GENESIS, fields(1, **change))


def test_the_previous_hash_is_in_the_hash() -> None:
    assert ledger.entry_hash(GENESIS, fields(1)) != ledger.entry_hash("1" * 64, fields(1))


def test_a_chain_links_each_entry_to_the_one_before() -> None:
    entries = good_chain()
    assert entries[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(entries):
        assert after.prev_hash == before.entry_hash
    assert ledger.verify("org_1", entries, head_of(entries)) is None


def test_a_chain_continues_across_batches() -> None:
    whole = good_chain(6)
    first = ledger.chain(GENESIS, [fields(s) for s in (1, 2, 3)])
    second = ledger.chain(first[-1].entry_hash, [fields(s) for s in (4, 5, 6)])
    assert first + second == whole


def changed(entries: list[Entry]) -> list[Entry]:
    out = list(entries)
    out[2] = dataclasses.replace(out[2], fields=fields(3, status_code=500))
    return out


def removed(entries: list[Entry]) -> list[Entry]:
    return entries[:2] + entries[3:]


def removed_renumbered(entries: list[Entry]) -> list[Entry]:
    """Entry 3 removed and the later ones renumbered to hide the gap."""
    out = entries[:2]
    for entry in entries[3:]:
        out.append(
            dataclasses.replace(
                entry, fields=dataclasses.replace(entry.fields, seq=entry.fields.seq - 1)
            )
        )
    return out


def reordered(entries: list[Entry]) -> list[Entry]:
    """Entries 3 and 4 swapped, each keeping its own sequence number."""
    out = list(entries)
    out[2], out[3] = out[3], out[2]
    return out


def reordered_renumbered(entries: list[Entry]) -> list[Entry]:
    """Entries 3 and 4 swapped and renumbered so that the numbers still run 1..5."""
    out = list(entries)
    three, four = out[2], out[3]
    out[2] = dataclasses.replace(four, fields=dataclasses.replace(four.fields, seq=3))
    out[3] = dataclasses.replace(three, fields=dataclasses.replace(three.fields, seq=4))
    return out


def rehashed_alone(entries: list[Entry]) -> list[Entry]:
    """Entry 3 changed and its own hash recomputed: entry 4 no longer follows it."""
    out = list(entries)
    new_fields = fields(3, status_code=500)
    out[2] = Entry(new_fields, out[2].prev_hash, ledger.entry_hash(out[2].prev_hash, new_fields))
    return out


def tail_removed(entries: list[Entry]) -> list[Entry]:
    return entries[:-1]


@pytest.mark.parametrize(
    ("tamper", "broken_seq", "words"),
    [
        (changed, 3, "changed"),
        (removed, 4, "missing"),
        (removed_renumbered, 3, "removed or moved"),
        (reordered, 4, "missing or moved"),
        (reordered_renumbered, 3, "removed or moved"),
        (rehashed_alone, 4, "removed or moved"),
        (tail_removed, 5, "removed from the end"),
    ],
)
def test_verify_names_the_first_broken_entry(tamper: object, broken_seq: int, words: str) -> None:
    entries = good_chain()
    head = head_of(entries)
    tampered = tamper(entries)  # type: ignore[operator]
    found = ledger.verify("org_1", tampered, head)
    assert found is not None
    assert found.seq == broken_seq
    assert words in found.reason
    assert f"entry {broken_seq}" in found.describe()


def test_an_empty_ledger_without_a_head_is_intact() -> None:
    assert ledger.verify("org_1", [], None) is None


def test_entries_without_a_head_are_broken() -> None:
    assert ledger.verify("org_1", good_chain(2), None) is not None


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"status_code": None, "payload_sha256": None},
        {"type": "", "user_id": 'ünïcødé \u2028 "quoted"'},
        {"seq": 2**62, "status_code": 599},
    ],
)
def test_the_delivery_paths_rows_chain_exactly_as_the_entries_do(changes: object) -> None:
    """The record chains tuples (``chain_values``) where everything else reads entries: the
    same hashes, and rows in the ledger's column order, entry by entry."""
    entries = [fields(n, **changes) for n in (1, 2, 3)]  # type: ignore[arg-type]
    expected, prev = [], "f" * 64  # each entry's hash over the one before, by hand
    for entry in entries:
        digest = hashlib.sha256(prev.encode() + b"\n" + ledger.canonical(entry)).hexdigest()
        expected.append((*ledger.values(entry), prev, digest))
        prev = digest
    rows = ledger.chain_values("f" * 64, [ledger.values(e) for e in entries])
    assert rows == expected
    reference = ledger.chain("f" * 64, entries)
    assert rows == [(*ledger.values(e.fields), e.prev_hash, e.entry_hash) for e in reference]
    assert ledger.hash_values(GENESIS, ledger.values(entries[0])) == ledger.entry_hash(
        GENESIS, entries[0]
    )
