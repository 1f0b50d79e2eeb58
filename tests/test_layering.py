"""Layering rules: core/ never imports streamlit (pages are thin, core is plain Python)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_never_imports_streamlit():
    modules = sorted(p.stem for p in (ROOT / "core").glob("*.py") if p.stem not in ("__main__",))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module('core.' + m if m != '__init__' else 'core')\n"
        "bad = [m for m in sys.modules if m == 'streamlit' or m.startswith('streamlit.')]\n"
        "print(len(bad)); sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "train" in modules and "imaging" in modules and "sources" in modules


def _imports(path: Path, packages: tuple[str, ...]) -> set[str]:
    """Product modules a file imports (module level and inside functions)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in packages:
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif node.module.split(".")[0] in packages:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in packages}
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the product modules it imports, over core/ and ui/."""
    packages = ("core", "ui")
    graph = {f"{p.parent.name}.{p.stem}": _imports(p, packages) for pkg in packages for p in (ROOT / pkg).glob("*.py")}
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of modules ([] when there is none); depth-first search with colours."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def test_no_import_cycles_and_core_never_imports_ui():
    graph = import_graph()
    assert "core.models" in graph and "ui.run_view" in graph
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))
    assert not [(m, d) for m, deps in graph.items() if m.startswith("core.") for d in deps if d.startswith("ui.")]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the check itself finds a cycle


def test_views_never_import_each_other():
    graph = import_graph()
    below = {"ui.common", "ui.auth", "ui.__init__"}  # what the views share sits here, below them
    views = {m for m in graph if m.startswith("ui.") and m not in below}
    assert {"ui.explorer_view", "ui.eval_view", "ui.setup_form"} <= views
    assert {m: graph[m] & views for m in views if graph[m] & views} == {}
