"""Tests reach the database through the named queries of ``consent_relay.storage`` (``inspect``
for counts, states and raw rows; ``tamper`` for damage done on purpose; ``databases`` for the
server itself), never with SQL of their own.

Every test file is read with ``ast`` and may not: import ``sqlalchemy`` or a database driver
(``asyncpg``, ``sqlite3``, ``aiosqlite``, ``psycopg``); touch a connection
(``tx.conn``, ``store.engine.connect()`` or ``.begin()``, ``exec_driver_sql``); call ``text()``;
or hold a string that is an SQL statement (``"SELECT ... FROM"``, ``"UPDATE t SET"``, ...).
``ALLOWED`` names the files that still do, each with its reason; it only shrinks (it is empty:
every test file asks storage by name).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, str] = {}

# A string that is an SQL statement (upper-case keywords, as the tests write them). Prose and
# single words ("DELETE", an HTTP method) are not.
SQL_STATEMENT = re.compile(
    r"\s*(SELECT\b[\s\S]*\bFROM\b|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b"
    r"|(CREATE|DROP|ALTER)\s+(TABLE|TRIGGER|DATABASE|INDEX|FUNCTION|VIEW)\b|TRUNCATE\b|PRAGMA\b)"
)
CONNECTION_ATTRIBUTES = {"conn", "exec_driver_sql"}
DATABASE_MODULES = {"sqlalchemy", "asyncpg", "sqlite3", "aiosqlite", "psycopg", "psycopg2"}


def violations(source: str) -> list[str]:
    """What in ``source`` runs SQL or handles a connection, one line each: ``<line>: <what>``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [f"{line}: imports {a.name}" for a in node.names if _is_database(a.name)]
        elif isinstance(node, ast.ImportFrom) and _is_database(node.module or ""):
            found.append(f"{line}: imports from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in CONNECTION_ATTRIBUTES:
            found.append(f"{line}: .{node.attr}")
        elif isinstance(node, ast.Call) and (connects := _connects(node.func)):
            found.append(f"{line}: .engine.{connects}()")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "text":
                found.append(f"{line}: text()")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SQL_STATEMENT.match(node.value)
        ):
            found.append(f"{line}: SQL {' '.join(node.value.split()[:2])} ...")
    return sorted(found, key=lambda entry: int(entry.split(":", 1)[0]))


def _is_database(module: str) -> bool:
    """SQLAlchemy or a database driver (a connection of the test's own)."""
    return module.split(".")[0] in DATABASE_MODULES


def _connects(func: ast.expr) -> str | None:
    """``connect`` or ``begin`` for ``<anything>.engine.connect`` or ``.engine.begin``."""
    if (
        isinstance(func, ast.Attribute)
        and func.attr in ("connect", "begin")
        and isinstance(func.value, ast.Attribute)
        and func.value.attr == "engine"
    ):
        return func.attr
    return None


def _test_files() -> Iterator[Path]:
    for path in sorted(TESTS.rglob("*.py")):
        if "node_modules" not in path.parts:
            yield path


def _name(path: Path) -> str:
    return path.relative_to(TESTS).as_posix()


def test_no_test_file_runs_sql_of_its_own() -> None:
    offenders = {
        _name(path): found
        for path in _test_files()
        if _name(path) not in ALLOWED and (found := violations(path.read_text()))
    }
    assert not offenders, "\n".join(
        f"{name}: {'; '.join(found)}  (use consent_relay.storage.inspect, tamper, databases)"
        for name, found in offenders.items()
    )


def test_the_allowed_list_names_only_files_that_need_it() -> None:
    """A converted (or removed) file leaves the list, so that it cannot slip back."""
    present = {_name(path): path for path in _test_files()}
    stale = [
        name for name in ALLOWED if name not in present or not violations(present[name].read_text())
    ]
    assert not stale, f"no longer needed in ALLOWED: {stale}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from sqlalchemy import select", ["1: imports from sqlalchemy"]),
        ("from sqlalchemy.engine import make_url", ["1: imports from sqlalchemy.engine"]),
        ("import sqlalchemy.exc", ["1: imports sqlalchemy.exc"]),
        ("import asyncpg, json", ["1: imports asyncpg"]),
        ("def f():\n    import sqlite3", ["2: imports sqlite3"]),
        ("from sqlalchemy_utils import x\nimport asyncpgx", []),
        ("script = 'import sqlite3, sys'", []),  # a subprocess's script: its own process
        ("rows = await tx.conn.execute(query)", ["1: .conn"]),
        ("await conn.exec_driver_sql('x')", ["1: .exec_driver_sql"]),
        ("async with store.engine.begin() as c:\n    pass", ["1: .engine.begin()"]),
        ("async with ctx.store.engine.connect() as c:\n    pass", ["1: .engine.connect()"]),
        ("q = text('x')", ["1: text()"]),
        ('n = await scalar(ctx, "SELECT count(*) FROM t")', ["1: SQL SELECT count(*) ..."]),
        ('s = ["UPDATE ledger_entries SET seq = 4"]', ["1: SQL UPDATE ledger_entries ..."]),
        ("x = 1\ny = '''\n  DELETE FROM t'''", ["2: SQL DELETE FROM ..."]),
        ('sql = "CREATE TRIGGER refuse BEFORE INSERT"', ["1: SQL CREATE TRIGGER ..."]),
        # Not SQL, not a connection:
        ('await call(api, "DELETE", path)', []),
        ('assert b.query == "SELECT 1"', []),
        ("body = path.read_text()", []),
        ("expect(page).to_contain_text('x')", []),
        ("ctx = Context(settings=s)", []),
        ("async with ctx.store.read() as tx:\n    n = await inspect.count(tx, 'events')", []),
        ("await ctx.store.engine.dispose()", []),
        ('"""Reads ``SELECT 1`` from the listener."""', []),
    ],
)  # fmt: skip
def test_violations_are_found(source: str, expected: list[str]) -> None:
    assert violations(source) == expected
