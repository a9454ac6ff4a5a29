"""The import directions between the rooms of the code (ARCHITECTURE.md), checked statically.

grimp parses every import statement (inside functions and under ``TYPE_CHECKING`` too) of the
core and both adapters; a rule fails when a *chain* of imports, direct or not, crosses it:

- the serving runtime (everything in ``palm_middleware`` but ``offline``, ``cli`` and ``demo``)
  imports none of the offline tooling, the applications (CLI, demo) or the adapters;
- the offline tooling imports neither the applications nor the adapters;
- the applications import no adapter, with one exception: ``palm proxy`` (``cli/proxy.py``)
  builds the LiteLLM runtime before serving (fail fast), importing the optional
  ``palm_litellm`` inside the function that needs it, never at module level;
- the adapters import neither the offline tooling nor the applications, nor each other.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

CORE = "palm_middleware"
OFFLINE = f"{CORE}.offline"
APPS = (f"{CORE}.cli", f"{CORE}.demo")
LITELLM, LANGCHAIN = "palm_litellm", "palm_langchain"
#: The one allowed crossing (see the module docstring): importer module -> adapter package.
ALLOWED = {(f"{CORE}.cli.proxy", LITELLM)}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(CORE, LITELLM, LANGCHAIN, cache_dir=None)


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _runtime(graph: grimp.ImportGraph) -> set[str]:
    return {m for m in graph.modules if _in(m, CORE) and not _in(m, OFFLINE, *APPS)}


def _crossings(
    graph: grimp.ImportGraph, importers: set[str], forbidden: tuple[str, ...]
) -> Iterator[str]:
    """One line per importer that reaches a forbidden package, with the shortest chain."""
    for importer in sorted(importers):
        for imported in sorted(graph.find_upstream_modules(importer)):
            if _in(imported, *forbidden):
                chain = graph.find_shortest_chain(importer=importer, imported=imported)
                yield " -> ".join(chain or (importer, imported))
                break


def test_rooms_are_where_the_rules_say(graph: grimp.ImportGraph) -> None:
    """Guard against a rule passing vacuously because a package moved or was renamed."""
    for package in (OFFLINE, *APPS, f"{CORE}.pipeline", f"{CORE}.portfolio.manifest"):
        assert package in graph.modules, package
    assert {LITELLM, LANGCHAIN} <= graph.modules


def test_runtime_imports_no_tooling_application_or_adapter(graph: grimp.ImportGraph) -> None:
    assert not list(_crossings(graph, _runtime(graph), (OFFLINE, *APPS, LITELLM, LANGCHAIN)))


def test_offline_tooling_imports_no_application_or_adapter(graph: grimp.ImportGraph) -> None:
    offline = {m for m in graph.modules if _in(m, OFFLINE)}
    assert not list(_crossings(graph, offline, (*APPS, LITELLM, LANGCHAIN)))


def _module_level_imports(module: str) -> set[str]:
    """Modules imported by statements that run at import time (not inside a def)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    out: set[str] = set()
    todo: list[ast.stmt] = list(ast.parse(Path(spec.origin).read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            todo.extend(ast.iter_child_nodes(node))  # type: ignore[arg-type]
    return out


def test_applications_import_no_adapter(graph: grimp.ImportGraph) -> None:
    allowed = grimp.build_graph(CORE, LITELLM, LANGCHAIN, cache_dir=None)  # edited below
    for importer, adapter in ALLOWED:
        assert not {m for m in _module_level_imports(importer) if _in(m, adapter)}, importer
        for imported in graph.find_modules_directly_imported_by(importer):
            if _in(imported, adapter):
                allowed.remove_import(importer=importer, imported=imported)
    apps = {m for m in graph.modules if _in(m, *APPS)}
    assert not list(_crossings(allowed, apps, (LITELLM, LANGCHAIN)))


@pytest.mark.parametrize(("adapter", "other"), [(LITELLM, LANGCHAIN), (LANGCHAIN, LITELLM)])
def test_adapters_use_only_the_runtime(graph: grimp.ImportGraph, adapter: str, other: str) -> None:
    modules = {m for m in graph.modules if _in(m, adapter)}
    assert not list(_crossings(graph, modules, (OFFLINE, *APPS, other)))


def test_the_check_sees_a_crossing(graph: grimp.ImportGraph) -> None:
    """The rule machinery itself: a chain we know exists is reported."""
    found = list(_crossings(graph, {f"{CORE}.cli.build"}, (OFFLINE,)))
    assert found and found[0].startswith(f"{CORE}.cli.build -> {OFFLINE}.")


def test_policy_evaluator_imports_neither_loader_nor_compiler(graph: grimp.ImportGraph) -> None:
    """Compiled once, evaluated many times: the evaluator never reaches back (no cycle)."""
    forbidden = (f"{CORE}.policy.loader", f"{CORE}.policy.compiler")
    assert not list(_crossings(graph, {f"{CORE}.policy.bounds"}, forbidden))
    assert not graph.find_illegal_dependencies_for_layers(
        layers=("loader", "compiler", "bounds", "merge"), containers={f"{CORE}.policy"}
    )


def test_palms_rooms_never_reach_back_into_the_pipeline(graph: grimp.ImportGraph) -> None:
    """``Palm`` orchestrates; the rooms it calls stand on their own (no cycle through it)."""
    rooms = {
        f"{CORE}.{name}"
        for name in (
            "audit",
            "bounded_routing",
            "decision",
            "profiles",
            "pseudonyms",
            "topic_labels",
            "preferences.events",
            "preferences.model",
            "preferences.resolve",
            "preferences.state",
        )
    }
    assert rooms <= graph.modules
    assert not list(_crossings(graph, rooms, (f"{CORE}.pipeline",)))
