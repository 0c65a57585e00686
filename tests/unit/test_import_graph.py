"""Imports run one way: nothing under relay/ imports feedback or the CLI, and no module
imports itself back through others.

The graph is read from the source with ast, so every import counts: those inside
functions (the CLI imports lazily), and those under TYPE_CHECKING (a cycle that only
type checkers see is still two modules that cannot be understood apart). Edges join
modules, not packages: `from relay.intake import replies` is an edge to
relay.intake.replies, `from relay.store import Store` one to relay.store.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

TOP = ("relay", "feedback", "cli")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for relay/, feedback/ and the CLI (cli.py or cli/)."""
    files: dict[str, Path] = {}
    for top in TOP:
        single = ROOT / f"{top}.py"
        if single.is_file():
            files[top] = single
        for path in sorted((ROOT / top).rglob("*.py")) if (ROOT / top).is_dir() else []:
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported(module: str, source: str, known: set[str], *, is_package: bool = False) -> Iterator[str]:
    """The project modules `module` imports, wherever in its source the import stands."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from relay.intake import replies` imports the submodule; `from relay.store import Store`
            # takes a name from the package's own module
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            # `import relay.intake.smtp` names the module; a name inside a module counts as the module
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in TOP:
                yield name


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {
        module: set(imported(module, path.read_text("utf-8"), known, is_package=path.name == "__init__.py"))
        - {module}
        for module, path in files.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_covers_every_stage() -> None:
    edges = graph()
    for module in ("relay.config", "relay.intake.handler", "relay.intake.smtp", "relay.store",
                   "relay.sending.sender", "feedback.apply", "feedback.ingest.consumer", "cli"):  # fmt: skip
        assert module in edges, module
    assert "relay.intake.handler" in edges["relay.intake.smtp"]
    assert "relay.store" in edges["feedback.apply"]
    assert len(edges) > 50 and sum(map(len, edges.values())) > 100  # not silently empty


def test_relay_imports_neither_feedback_nor_the_cli() -> None:
    wrong = {
        module: sorted(t for t in targets if t.split(".")[0] in ("feedback", "cli"))
        for module, targets in graph().items()
        if module.split(".")[0] == "relay"
    }
    assert {module: targets for module, targets in wrong.items() if targets} == {}


def test_feedback_does_not_import_the_cli() -> None:
    wrong = {
        module: sorted(t for t in targets if t.split(".")[0] == "cli")
        for module, targets in graph().items()
        if module.split(".")[0] == "feedback"
    }
    assert {module: targets for module, targets in wrong.items() if targets} == {}


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_cycles_and_relative_imports_are_found() -> None:
    """The checker itself: a planted cycle is reported; relative imports resolve."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    known = set("relay relay.config relay.intake relay.intake.replies relay.intake.handler feedback".split())
    source = (
        "from . import replies\nfrom ..config import Config\nimport json\n"
        "def f():\n    import relay.intake.handler\n"
        "if TYPE_CHECKING:\n    from feedback.apply import apply_batch\n"
    )
    assert set(imported("relay.intake.probe", source, known)) == {
        "relay.intake.replies", "relay.config", "relay.intake.handler", "feedback",
    }  # fmt: skip
    assert set(imported("relay.intake", "from . import replies\n", known, is_package=True)) == {
        "relay.intake.replies"
    }
