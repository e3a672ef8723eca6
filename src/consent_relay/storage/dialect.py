"""Where SQLite and PostgreSQL statements differ: row sources over a JSON array parameter.

Set-based statements take their rows as one JSON array bound to one parameter, unpacked by
``json_to_recordset`` (PostgreSQL) or ``json_each`` (SQLite). The statement text then does
not depend on how many rows there are, so it is compiled (and, on PostgreSQL, prepared) once,
and a batch of any size costs one round trip.

On PostgreSQL the array is read as ``json``, not ``jsonb``: each batch is read once, and
``jsonb`` first built its binary form (4.5 us a row of attempts against 3.8 as ``json``,
measured; the worker's record, the ledger's append and the write path all read one or two
such arrays a delivery). Every value that is itself JSON travels as a string (already
dumped), so the two read the same rows; an escaped NUL fails the statement either way.
"""

from __future__ import annotations

from collections.abc import Sequence

Columns = Sequence[tuple[str, str]]  # (name, PostgreSQL type)


def rows_source(dialect: str, columns: Columns, param: str = "rows") -> str:
    """A row source ``v`` over the JSON array bound as ``:param``, with typed columns."""
    if dialect == "postgresql":
        spec = ", ".join(f"{name} {kind}" for name, kind in columns)
        return f"json_to_recordset(CAST(:{param} AS json)) AS v({spec})"
    picks = ", ".join(f"json_extract(value, '$.{name}') AS {name}" for name, _ in columns)
    return f"(SELECT {picks} FROM json_each(:{param})) AS v"


def insert_rows(dialect: str, table: str, columns: Columns, tail: str = "") -> str:
    """INSERT of every row of the JSON array ``:rows`` into ``table``; ``tail`` adds what
    follows (``ON CONFLICT DO NOTHING RETURNING ...``). (``WHERE true`` lets SQLite parse an
    upsert after a SELECT.)"""
    names = ", ".join(name for name, _ in columns)
    source = rows_source(dialect, columns)
    return f"INSERT INTO {table} ({names}) SELECT {names} FROM {source} WHERE true {tail}"


def strings(dialect: str, param: str) -> str:
    """A subquery over the strings of the JSON array bound as ``:param``."""
    if dialect == "postgresql":
        return f"SELECT jsonb_array_elements_text(CAST(:{param} AS jsonb))"
    return f"SELECT value FROM json_each(:{param})"


def for_update(dialect: str) -> str:
    """Row locks for the rest of the transaction (SQLite's write transactions are already
    exclusive)."""
    return " FOR UPDATE" if dialect == "postgresql" else ""
