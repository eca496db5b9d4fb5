"""The floor plan: dependencies run one way, project <- stats <- messages <- tasks, no module
imports another that (directly or not) imports it back, and each app is the only one to touch its
stores: its tables (SQL by name, or the ORM), its Redis key namespaces and its cache aliases.
Read from the source with ast, code inside functions included, so nothing can hide from it."""

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from django.apps import apps

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


# --- Stores ---------------------------------------------------------------------------------------

# Redis key namespaces (the first literal part of a project.redis.key()) and cache aliases, by the
# app that owns them. A new namespace must be added here, to its owner.
REDIS_NAMESPACES = {
    "stream": "messages",
    "metrics": "messages",
    "drain": "messages",
    "quota": "messages",
    "idem": "messages",
    "idem-budget": "messages",
    "cid": "messages",
    "at": "messages",
    "stats": "stats",
    "jobs": "tasks",
    "authfail": "project",
    "readyz": "project",
    "web": "project",
    "workers": "project",
}
CACHE_ALIASES = {"staged": "messages"}

_SQL_WRITE = re.compile(
    r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?|LOCK\s+TABLE|COPY)\s+(?:ONLY\s+)?\"?([a-z_][a-z0-9_]*)",
    re.IGNORECASE,
)
_SQL_READ = re.compile(r"\b(?:FROM|JOIN)\s+\"?([a-z_][a-z0-9_]*)", re.IGNORECASE)
_ORM_WRITES = {"create", "bulk_create", "bulk_update", "update", "delete", "get_or_create", "update_or_create"}


def table_owners() -> dict[str, str]:
    """Every model's table, by the top-level package of its app."""
    return {m._meta.db_table: m._meta.app_config.name.split(".")[0] for m in apps.get_models(include_auto_created=True)}


def model_owners() -> dict[str, str]:
    return {m.__name__: m._meta.app_config.name.split(".")[0] for m in apps.get_models()}


def _texts(tree: ast.AST) -> Iterator[str]:
    """The module's string literals, f-strings' literal parts included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def _orm_receiver(node: ast.AST) -> str | None:
    """X for a call chain X.objects....<write>(...)."""
    while isinstance(node, ast.Call | ast.Attribute):
        if isinstance(node, ast.Attribute) and node.attr == "objects" and isinstance(node.value, ast.Name):
            return node.value.id
        node = node.func if isinstance(node, ast.Call) else node.value
    return None


def store_uses(path: Path) -> Iterator[tuple[str, str, str]]:
    """(kind, store, how) for each store the module names: ("table", name, "write" or "read"),
    ("redis", namespace, "key"), ("cache", alias, "use")."""
    tree = ast.parse(path.read_text(), str(path))
    for text in _texts(tree):
        written = set(_SQL_WRITE.findall(text))
        for table in written:
            yield "table", table.lower(), "write"
        for table in set(_SQL_READ.findall(text)) - written:
            yield "table", table.lower(), "read"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in _ORM_WRITES and (model := _orm_receiver(func.value)):
                yield "model", model, "write"
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name == "key":
                literal = next(
                    (a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)), None
                )
                if literal is not None:
                    yield "redis", literal, "key"
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "caches"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            yield "cache", node.slice.value, "use"


def store_leaks(
    root: Path = ROOT,
    tables: Mapping[str, str] | None = None,
    models: Mapping[str, str] | None = None,
) -> list[str]:
    """Each place a module touches a store of another app: a write (SQL or ORM) to its table, a
    read by SQL of a table of an app on a higher floor, a key in its Redis namespace or its cache
    alias, or a Redis namespace or cache alias that nobody owns. Migrations are left out."""
    tables = table_owners() if tables is None else tables
    models = model_owners() if models is None else models
    leaks = []
    for name, path in modules(root).items():
        if ".migrations." in f".{name}.":
            continue
        app = name.split(".")[0]
        for kind, store, how in sorted(set(store_uses(path))):
            owner = {"table": tables, "model": models, "redis": REDIS_NAMESPACES, "cache": CACHE_ALIASES}[kind].get(
                store
            )
            if owner is None:
                if kind in ("redis", "cache"):
                    leaks.append(f"{name}: {kind} {store} has no owner")
                continue
            if owner == app or owner not in FLOORS:
                continue
            if how == "read" and FLOORS.index(owner) < FLOORS.index(app):
                continue  # reading a lower floor's table is like importing it
            leaks.append(f"{name}: {how} {kind} {store} of {owner}")
    return leaks


def test_each_app_alone_touches_its_tables_redis_namespaces_and_caches():
    assert store_leaks() == []


def test_the_store_check_sees_another_app_s_table_locked_by_name(tree: Path):
    (tree / "stats" / "services.py").write_text('def f(c):\n    c.execute("LOCK TABLE message IN SHARE MODE")\n')
    (tree / "tasks" / "jobs.py").write_text('SQL = f"DELETE FROM message WHERE id = {1}"\n')
    (tree / "messages" / "ok.py").write_text('SQL = "INSERT INTO message SELECT * FROM incoming"\n')
    assert store_leaks(tree, {"message": "messages"}, {}) == [
        "stats.services: write table message of messages",
        "tasks.jobs: write table message of messages",
    ]


def test_the_store_check_sees_an_upward_read_and_an_orm_write(tree: Path):
    (tree / "stats" / "selectors.py").write_text('SQL = "SELECT count(*) FROM message"\n')
    (tree / "tasks" / "erasing.py").write_text("def f():\n    Message.objects.filter(username='x').delete()\n")
    assert store_leaks(tree, {"message": "messages"}, {"Message": "messages"}) == [
        "stats.selectors: read table message of messages",
        "tasks.erasing: write model Message of messages",
    ]


def test_the_store_check_sees_another_app_s_redis_namespace_and_cache(tree: Path):
    (tree / "tasks" / "erasing.py").write_text(
        'def f():\n    redis_client().xdel(key("stream", "dead"), 1)\n    caches["staged"].delete("x")\n'
    )
    (tree / "stats" / "publish.py").write_text('K = key("nobody", "x")\n')
    assert store_leaks(tree, {}, {}) == [
        "stats.publish: redis nobody has no owner",
        "tasks.erasing: use cache staged of messages",
        "tasks.erasing: key redis stream of messages",
    ]
