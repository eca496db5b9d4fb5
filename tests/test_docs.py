"""The README and docs/: the README stays a short front door, every docs page is listed in
docs/index.md, and the README's error-code table names exactly the codes the code answers."""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# Where an error code is born: ApiError(status, code, ...) in the apps (the code a literal, or a
# name assigned literals in the same function), and JSON written by hand (the front door's in its
# nginx template, a few answers in the apps).
_FRONT_ERROR = re.compile(r'\\?"error\\?"\s*:\s*\\?"([a-z_]+)')


def _literals(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _api_errors(tree: ast.AST) -> Iterator[tuple[str, str]]:
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
        for call in ast.walk(function):
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "ApiError" and len(call.args) > 1):
                continue
            status, code = call.args[0], call.args[1]
            shown = str(status.value) if isinstance(status, ast.Constant) else ""
            if isinstance(code, ast.Name):
                for assign in ast.walk(function):
                    if isinstance(assign, ast.Assign) and any(
                        getattr(t, "id", None) == code.id for t in assign.targets
                    ):
                        yield from ((shown, literal) for literal in _literals(assign.value))
            else:
                yield from ((shown, literal) for literal in _literals(code))


def _codes_in_code() -> dict[str, set[str]]:
    """Each code and the statuses it is answered with (none where the status is not beside it)."""
    codes: dict[str, set[str]] = {}
    for path in [path for app in ("project", "messages", "stats", "tasks") for path in (ROOT / app).rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for status, code in _api_errors(ast.parse(text)):
            codes.setdefault(code, set()).update({status} - {""})
        for code in _FRONT_ERROR.findall(text):  # an answer built by hand: {"error": "..."}
            codes.setdefault(code, set())
    for code in _FRONT_ERROR.findall((ROOT / "deploy" / "nginx.conf.template").read_text(encoding="utf-8")):
        codes.setdefault(code, set())
    return codes


def _codes_in_table(page: Path) -> dict[str, str]:
    text = page.read_text(encoding="utf-8")
    table = text[text.index("| status | codes |") :].split("\n\n", 1)[0]
    return {
        code: line.split("|")[1].strip()
        for line in table.splitlines()[2:]
        for code in re.findall(r"`([a-z_]+)`", line.split("|")[2])
    }


@pytest.mark.parametrize("page", [README, DOCS / "api.md"], ids=["README.md", "docs/api.md"])
def test_the_error_table_names_every_code_the_code_answers_with_its_status(page: Path) -> None:
    in_code, in_table = _codes_in_code(), _codes_in_table(page)

    assert set(in_code) - set(in_table) == set(), "codes answered but missing from the table"
    assert set(in_table) - set(in_code) == set(), "codes in the table that nothing answers"
    assert {
        code: in_table[code] for code, statuses in in_code.items() if statuses and in_table[code] not in statuses
    } == {}


def test_the_readme_is_a_short_front_door_with_the_folder_map_near_the_top() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()

    assert len(lines) <= 300
    assert any(line.startswith("## Folder map") for line in lines[:40])


def test_every_docs_page_is_listed_in_the_index_and_linked_from_the_readme() -> None:
    index, readme = (DOCS / "index.md").read_text(encoding="utf-8"), README.read_text(encoding="utf-8")

    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not list {page.name}"
            assert f"(docs/{page.name})" in readme or page.name == "benchmarks-history.md", page.name
