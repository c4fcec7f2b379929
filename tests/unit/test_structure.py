"""The house rules a newcomer can rely on (issue 17): no module of the services, shared code or benches
over 600 lines and no function over 80, unless the file says why in a line `# size: <why>`. The import
rules are import-linter's contracts (.importlinter, in make lint)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
MODULES = sorted(
    p
    for package in ("services", "shared", "bench")
    for p in (REPO_ROOT / package).rglob("*.py")
    if "migrations" not in p.parts
)


def _says_why(source: str) -> bool:
    return any(line.strip().startswith("# size: ") for line in source.splitlines())


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_modules_and_functions_stay_small_or_say_why(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    if _says_why(source):
        return
    lines = source.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{lines} lines: split it along its seams, or say why (# size: …)"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
