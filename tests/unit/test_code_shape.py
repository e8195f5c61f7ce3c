"""The code's shape: short functions with few parameters (a typer command's signature is its
options, so only its body counts, and its parameters do not)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

TUNER = REPO_ROOT / "tuner"
MAX_LINES = 60
MAX_PARAMETERS = 8


def _is_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated `@app.command(...)` (or any typer app's)."""
    for decorator in node.decorator_list:
        call = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(call, ast.Attribute) and call.attr == "command":
            return True
    return False


def _shape(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """Its lines (a command's body only) and its parameters (none counted for a command)."""
    command = _is_command(node)
    start = node.body[0].lineno if command else node.lineno
    lines = (node.end_lineno or node.lineno) - start + 1
    a = node.args
    names = [p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs]]
    names += [p.arg for p in (a.vararg, a.kwarg) if p is not None]
    parameters = 0 if command else len([n for n in names if n not in ("self", "cls")])
    return lines, parameters


def shapes(root: Path) -> list[tuple[str, int, int]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines, parameters = _shape(node)
                where = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                found.append((where, lines, parameters))
    return found


def test_no_function_is_over_60_lines_or_8_parameters() -> None:
    found = shapes(TUNER)
    assert len(found) > 500  # the whole package was read
    long = [f"{w} ({n} lines)" for w, n, _ in found if n > MAX_LINES]
    wide = [f"{w} ({p} parameters)" for w, _, p in found if p > MAX_PARAMETERS]
    assert not long, long
    assert not wide, wide


def test_the_check_sees_a_long_function_and_a_wide_one(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (package / "m.py").write_text(
        f"def long():\n{body}\n\n"
        "def wide(a, b, c, d, e, f, g, h, i):\n    pass\n\n"
        "@app.command()\ndef command(a, b, c, d, e, f, g, h, i):\n    pass\n"
    )
    found = {w.split()[-1]: (n, p) for w, n, p in shapes(package)}
    assert found["long"][0] > MAX_LINES
    assert found["wide"][1] > MAX_PARAMETERS
    assert found["command"] == (1, 0)
