"""The packages depend one way: experiments -> router -> serving's wire contract, and no import circle.

Read from the source (every `import` and `from ... import`, lazy ones inside functions included),
so a new upward edge fails here before a reviewer has to spot it. docs/architecture.md states
the rule; this test is what keeps it true.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("serving", "router", "experiments")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def imports(name: str, path: Path) -> Iterator[str]:
    """The project modules `name` imports (a `from package import module` counts as the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in PACKAGES:
                yield target


GRAPH = {name: set(imports(name, path)) - {name} for name, path in MODULES.items()}


def allowed(source: str, target: str) -> bool:
    top, target_top = source.split(".")[0], target.split(".")[0]
    if top == "serving":
        return target_top == "serving"
    if top == "router":
        return target_top == "router" or target == "serving" or target.startswith("serving.tfserving")
    return True  # experiments may import all three


def test_every_import_points_down_a_layer():
    upward = sorted(f"{s} -> {t}" for s, targets in GRAPH.items() for t in targets if not allowed(s, t))
    assert upward == [], "imports against experiments -> router -> serving.tfserving:\n" + "\n".join(upward)


def test_the_wire_contract_does_not_reach_into_the_model_side():
    """serving.tfserving is what the router imports: nothing in it may pull in the model server or training."""
    reach = sorted(f"{s} -> {t}" for s, targets in GRAPH.items() if s.startswith("serving.tfserving")
                   for t in targets if not t.startswith("serving.tfserving") and t != "serving")
    assert reach == []


def test_no_import_circle():
    # Tarjan's strongly connected components: any component of more than one module is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    assert circles == [], f"import circles: {circles}"


@pytest.mark.parametrize("source, target, ok", [
    ("router.core", "experiments.config", False),
    ("router.backends.base", "serving.tfserving.tensors", True),
    ("router.cli", "serving.model_server.server", False),
    ("serving.tfserving.errors", "router.config", False),
    ("experiments.live.analysis", "router.config", True),
])
def test_the_rule_itself(source, target, ok):
    """The checker would catch the edges the old layout had (so the tests above can fail)."""
    assert allowed(source, target) is ok
