"""Every statement lives in ``consent_relay/storage/``, and the connection stays there.

Each module outside ``storage/`` is read with ``ast`` by the same rules the tests are held to
(``test_no_sql_in_tests.violations``): no SQL text, no ``text()``, no ``.conn`` or
``exec_driver_sql``, no connection opened from an engine, no database driver imported. The one
exception is SQLAlchemy's URL parser (``sqlalchemy.engine.make_url``), which reads a
database URL without touching a database.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.test_no_sql_in_tests import violations

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "consent_relay"
URL_PARSER = "from sqlalchemy.engine import make_url"


def outside_storage() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "storage" not in p.relative_to(PACKAGE).parts)


def found_in(source: str) -> list[str]:
    allowed = {
        f"{node.lineno}: imports from sqlalchemy.engine"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom)
        and node.module == "sqlalchemy.engine"
        and [a.name for a in node.names] == ["make_url"]
    }
    return [v for v in violations(source) if v not in allowed]


@pytest.mark.parametrize("path", outside_storage(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_statement_or_connection_outside_storage(path: Path) -> None:
    assert found_in(path.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "async def f(tx):\n    await tx.conn.execute(q)\n",
        "from sqlalchemy import text\n",
        "from sqlalchemy.engine import make_url, create_engine\n",
        "import asyncpg\n",
        "Q = 'SELECT id FROM users WHERE organization_id = ?'\n",
        "async def f(store):\n    async with store.engine.connect() as c:\n        pass\n",
    ],
)
def test_what_it_refuses(source: str) -> None:
    assert found_in(source) != []


def test_the_url_parser_is_allowed() -> None:
    assert found_in(URL_PARSER + "\n") == []
