"""Functions stay short (GUIDE practice 12): none in core/ or ui/ is longer than MAX_LINES lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60  # from the `def` line (decorators aside) to the last line of its body, docstring included


def long_functions(root: Path = ROOT, folders: tuple[str, ...] = ("core", "ui")) -> list[str]:
    """'path:line name (n lines)' of every function or method longer than MAX_LINES under root/<folders>."""
    out = []
    for folder in folders:
        for f in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), filename=str(f))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > MAX_LINES:
                        out.append(f"{f.relative_to(root).as_posix()}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_in_core_or_ui_is_longer_than_60_lines():
    long = long_functions()
    assert not long, f"split these into short functions (at most {MAX_LINES} lines):\n" + "\n".join(long)


def test_a_function_of_61_lines_is_listed_and_one_of_60_is_not(tmp_path):
    (tmp_path / "core").mkdir()
    lines = [f"x{i} = {i}" for i in range(59)]
    ok = "\n".join(["def ok():", *("    " + x for x in lines)])  # 60 lines
    long = "\n".join(["class C:", "    def long(self):", *("        " + x for x in [*lines, "return 1"])])
    (tmp_path / "core" / "m.py").write_text(f"{ok}\n\n\n{long}\n")
    assert long_functions(tmp_path) == ["core/m.py:64 long (61 lines)"]
