"""The package graph is one-way (the docstring of ``consent_relay/__init__.py`` draws it).

Every module's imports are read with ``ast`` (imports inside functions included; those under
``if TYPE_CHECKING:`` left out, as they never run) and checked against the layers: a module
imports only from its own layer or the layers below; ``services`` and ``delivery`` never
import each other; ``domain`` imports only itself; ``security`` only itself, ``domain``,
``errors`` and ``crypto``. A new top-level module must be given a layer here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Top-level names (the first part after ``consent_relay``), bottom layer first.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {
            "",  # the package itself (__version__)
            "domain",
            "security",
            "errors",
            "ids",
            "settings",
            "crypto",
            "key_users",
            "logs",
            "gctune",
            "input_text",
            "header_rules",
            "schema_base",
            "schemas",
        }
    ),
    frozenset({"storage"}),
    frozenset({"runtime", "clock", "metrics"}),
    frozenset({"services", "delivery"}),
    frozenset({"api", "dashboard", "cli", "runner", "processes", "demo"}),
)
# Within a layer, who may not import whom; and the few imports a narrow part may make.
SIBLINGS_APART = {("services", "delivery"), ("delivery", "services")}
ONLY = {
    "domain": {"domain"},
    "security": {"security", "domain", "errors", "crypto"},
}


def top(module: str) -> str:
    """``consent_relay.delivery.worker`` -> ``delivery``; ``consent_relay`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(name: str) -> int:
    for level, names in enumerate(LAYERS):
        if name in names:
            return level
    raise LookupError(f"consent_relay.{name} has no layer: add it to LAYERS")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node``, except the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def imports(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """The ``consent_relay`` modules (or packages) that ``source`` imports at run time.
    ``from consent_relay.delivery import outcome`` names ``consent_relay.delivery.outcome``:
    for the layers only the top-level name counts, so a name that is not a module is
    harmless."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in _walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "consent_relay")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "consent_relay":
                continue
            for alias in node.names:
                # ``from consent_relay import errors`` names a module, ``__version__`` not
                named = base == "consent_relay" and not alias.name.startswith("__")
                found.add(f"{base}.{alias.name}" if named else base)
    return found


def violations(modules: dict[str, set[str]]) -> list[str]:
    """Each import that goes against the graph, as ``importer -> imported (why)``."""
    found = []
    for importer, imported in sorted(modules.items()):
        mine = top(importer)
        for target in sorted(imported):
            theirs = top(target)
            if mine == theirs:
                continue
            if mine in ONLY and theirs not in ONLY[mine]:
                found.append(f"{importer} -> {target} ({mine} imports only {sorted(ONLY[mine])})")
            elif (mine, theirs) in SIBLINGS_APART:
                found.append(f"{importer} -> {target} ({mine} and {theirs} are siblings)")
            elif layer_of(theirs) > layer_of(mine):
                found.append(f"{importer} -> {target} ({theirs} is above {mine})")
    return found


def read_tree(src: Path) -> dict[str, set[str]]:
    """Every module under ``src/consent_relay`` with the modules it imports."""
    modules = {}
    for path in sorted((src / "consent_relay").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = imports(path.read_text(), name, is_package=is_package)
    return modules


def test_the_package_graph_is_one_way() -> None:
    modules = read_tree(SRC)
    assert len(modules) > 50
    for name in modules:
        layer_of(top(name))  # every module has a layer
    assert violations(modules) == []


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("consent_relay.delivery.worker", "consent_relay.runtime", True),
        ("consent_relay.delivery.worker", "consent_relay.storage.queue", True),
        ("consent_relay.delivery.requests", "consent_relay.security.webhook_secrets", True),
        ("consent_relay.services.webhooks", "consent_relay.security.targets", True),
        ("consent_relay.api.app", "consent_relay.runner", True),
        ("consent_relay.runner", "consent_relay.services.privacy", True),
        ("consent_relay.dashboard.health", "consent_relay.storage.health", True),
        ("consent_relay.domain.payloads", "consent_relay.domain.flatten", True),
        ("consent_relay.delivery.requests", "consent_relay.services.webhooks", False),
        ("consent_relay.delivery.worker", "consent_relay.services.context", False),
        ("consent_relay.delivery.worker", "consent_relay.api.app", False),
        ("consent_relay.delivery.worker", "consent_relay.dashboard.routes", False),
        ("consent_relay.services.webhooks", "consent_relay.delivery.signing", False),
        ("consent_relay.storage.queue", "consent_relay.services.outbox", False),
        ("consent_relay.storage.tx", "consent_relay.runtime", False),
        ("consent_relay.storage.tx", "consent_relay.metrics", False),
        ("consent_relay.runtime", "consent_relay.services.ingest", False),
        ("consent_relay.metrics", "consent_relay.services.webhooks", False),
        ("consent_relay.domain.users", "consent_relay.storage.records", False),
        ("consent_relay.domain.rules", "consent_relay.errors", False),
        ("consent_relay.security.targets", "consent_relay.storage.records", False),
    ],
)
def test_rules(importer: str, imported: str, allowed: bool) -> None:
    assert (violations({importer: {imported}}) == []) is allowed


CR = "consent_relay"


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        (f"from {CR}.delivery import outcome, sender", f"{CR}.x", {f"{CR}.delivery"}),
        (f"from {CR} import runner, errors", f"{CR}.x", {f"{CR}.runner", f"{CR}.errors"}),
        (f"from {CR} import __version__", f"{CR}.x", {CR}),
        (f"import {CR}.services.webhooks", f"{CR}.x", {f"{CR}.services.webhooks"}),
        (f"def f():\n    from {CR}.api import app", f"{CR}.x", {f"{CR}.api"}),
        (f"if TYPE_CHECKING:\n    from {CR}.services import ingest", f"{CR}.x", set()),
        (
            f"if typing.TYPE_CHECKING:\n    import {CR}.api\nelse:\n    import {CR}.cli",
            f"{CR}.x",
            {f"{CR}.cli"},
        ),
        ("from . import worker", f"{CR}.delivery.runner", {f"{CR}.delivery"}),
        ("from ..services import webhooks", f"{CR}.delivery.runner", {f"{CR}.services"}),
        ("import sqlalchemy\nfrom typing import Any", f"{CR}.x", set()),
    ],
)
def test_imports_are_read(source: str, module: str, expected: set[str]) -> None:
    assert imports(source, module) == expected


def test_a_module_without_a_layer_is_named() -> None:
    with pytest.raises(LookupError, match=r"consent_relay\.newthing"):
        violations({"consent_relay.newthing": {"consent_relay.errors"}})
