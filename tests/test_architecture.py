"""The floor plan: dependencies run one way, project <- stats <- messages <- tasks, and no module
imports another that (directly or not) imports it back. Read from the source with ast, imports
inside functions included, so no import can hide from the check."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lower floors first: a module may import its own floor and the ones below it.
FLOORS = ("project", "stats", "messages", "tasks")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(path, root): path for floor in FLOORS for path in sorted((root / floor).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports, anywhere in its body. `from a import b` counts as an
    import of a.b when that is a module, else of a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` names a.b.c; keep the longest prefix that is one of ours.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    found = modules(root)
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def floor(module: str) -> int:
    return FLOORS.index(module.split(".")[0])


def upward_edges(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if floor(b) > floor(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_from_a_floor_above_its_own():
    assert upward_edges(import_graph()) == []


def test_no_modules_import_each_other_in_a_cycle():
    assert cycles(import_graph()) == []


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for floor_name in FLOORS:
        (tmp_path / floor_name).mkdir()
        (tmp_path / floor_name / "__init__.py").write_text("")
    return tmp_path


def test_the_check_sees_an_upward_import_inside_a_function(tree: Path):
    (tree / "stats" / "services.py").write_text("def f():\n    from messages import staging\n")
    (tree / "messages" / "staging.py").write_text("import project\n")
    assert upward_edges(import_graph(tree)) == ["stats.services -> messages.staging"]


def test_the_check_sees_a_cycle_closed_by_a_relative_import(tree: Path):
    (tree / "tasks" / "services.py").write_text("from tasks import erasing\n")
    (tree / "tasks" / "erasing.py").write_text("def f():\n    from .services import g\n")
    assert cycles(import_graph(tree)) == [["tasks.erasing", "tasks.services"]]
