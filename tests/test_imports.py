"""The library's import graph has no cycle: a command module depends on trm_edge.console, never on the CLI that
registers it; a format's registry lives with the options that name formats. Every module-level import counts, and
every import inside a function that crosses rooms (core, export, runtimes, benchmarks, training: the cli <-> command
modules knot was such a one); an import inside a function within one room (a codec reaching its task's generator
only when asked to sample) keeps optional work out of import time and does not count, nor do those under
`if TYPE_CHECKING:`, which only the type checker runs."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

# source folder -> the package it installs as (pyproject's package-dir)
PACKAGES = {"trm_edge": "trm_edge", "export": "trm_edge.export", "runtimes": "trm_edge.runtimes",
            "benchmarks": "trm_edge.benchmarks", "training": "trm_edge.training"}


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for f in (REPO / folder).glob("**/*.py"):
            parts = [p for p in f.relative_to(REPO / folder).with_suffix("").parts if p != "__init__"]
            if parts[:1] != ["studies"]:  # benchmarks/studies/ is not installed
                found[".".join([package, *parts])] = f
    return found


def _runtime_imports(tree: ast.AST, lazy: bool = False):
    """(import node, whether it runs inside a function), leaving out the bodies of `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for orelse in node.orelse:
                yield from _runtime_imports_of(orelse, lazy)
            continue
        yield from _runtime_imports_of(node, lazy)


def _runtime_imports_of(node: ast.AST, lazy: bool):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, lazy
    else:
        yield from _runtime_imports(node, lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("export", "runtimes", "benchmarks", "training") else "core"


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph = {}
    for name, f in mods.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node, lazy in _runtime_imports(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                found = {a.name for a in node.names}
                deps |= {d for d in found if not lazy or room(d) != room(name)}
                continue
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found = {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
            deps |= {d for d in found if not lazy or room(d) != room(name)}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's, iteratively)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = counter
                counter += 1
                stack.append(w)
                on.add(w)
                work.append((w, iter(sorted(graph[w]))))
            elif w in on:
                low[v] = min(low[v], index[w])
    return found


def test_the_graph_is_read_whole():
    graph = import_graph()
    assert {"trm_edge.cli", "trm_edge.export.formats", "trm_edge.runtimes.ort", "trm_edge.benchmarks.commands"} <= \
        set(graph)
    assert "trm_edge.runtimes" in graph["trm_edge.api"]  # a function's import from another room counts
    assert "trm_edge.checkpoint" not in graph["trm_edge.api"]  # one within its room does not
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the finder finds


def test_no_import_cycles():
    assert cycles(import_graph()) == []
