"""Layering rules: core never imports streamlit or ui; no import cycles; imports point down the layers below.

The product's modules stand in the layers of LAYERS, bottom first, each named by a package (or module) prefix, so a new
module needs no row: it belongs to the layer of the longest prefix it starts with. A module imports modules of its own
layer or of lower ones, never of a higher one; the views of the UI (and the pages) never import each other: what they
share sits in a layer below them. Imports inside functions count as much as those at the top of a file.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "ui", "pages")

# The layers, bottom first: (name, module or package prefixes, whether its modules may import each other). The core
# packages follow the data flow: source -> items table -> DataLoaders -> Learner -> run folder -> evaluation.
LAYERS: list[tuple[str, tuple[str, ...], bool]] = [
    # paths and the app home's layout, atomic files, the settings schema, keyed pseudonyms, formatting
    ("base", ("core.__init__", "core.base"), True),
    # a run: its folder, the job store with the progress channel training reports through, executors, workers; the
    # queue names its tasks ("core.train.tasks:run_task") and the worker imports them by name, so runs needs
    # nothing above it
    ("runs", ("core.runs",), True),
    # any file -> an image; sources -> an items table; splits; items -> DataLoaders
    ("data", ("core.data",), True),
    # architectures, weight-file checks, starting weights, the saved-model format (+ manifest), ONNX export
    ("models", ("core.models",), True),
    # metrics as arrays, plots from them, data checks, explanations, prediction, the report
    ("evaluation", ("core.evaluation",), True),
    # learner, callbacks, fit, k-fold, LR finder, the job tasks, finishing a run, experiments
    ("train", ("core.train",), True),
    # what a hosted server needs: uploads, hosting rules, sign-in, kept settings
    ("web", ("core.web",), True),
    # the command line: everything the UI does is scriptable
    ("cli", ("core.cli", "core.__main__"), True),
    # what the views share: Streamlit caches, session keys, run-folder readers, sign-in, the working settings,
    # the label corrections both checks views offer
    ("ui shared", ("ui.__init__", "ui.auth", "ui.common", "ui.working_settings", "ui.corrections"), True),
    # one module of widgets per page; views never import each other
    ("ui views", ("ui",), False),
    # the router and the pages (thin); pages never import each other
    ("app", ("streamlit_app", "pages"), False),
]

# Imports that break the rules, each with why it is still here; the test fails when one is gone, so that this list
# only shrinks (empty since the views' shared parts moved to ui.common).
KNOWN_BREAKS: dict[tuple[str, str], str] = {}


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...], bool]] = LAYERS) -> int:
    """The index of a module's layer: the one with the longest prefix it starts with (-1: none)."""
    best, found = -1, -1
    for i, (_, prefixes, _) in enumerate(layers):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), i
    return found


def module_names() -> list[str]:
    """Every core module by dotted name (packages included), for importing them all."""
    return sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in (ROOT / "core").rglob("*.py")
        if p.name != "__main__.py"
    )


def test_core_never_imports_streamlit():
    modules = module_names()
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m == 'streamlit' or m.startswith('streamlit.')]\n"
        "print(len(bad)); sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert {"core.train.fit", "core.data.imaging", "core.data.sources"} <= set(modules)


def _imports(path: Path, packages: tuple[str, ...]) -> set[str]:
    """Product modules a file imports (module level and inside functions)."""
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


def product_files() -> dict[str, Path]:
    """module name -> file, over core/, ui/, pages/ and the router."""
    files = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts): p
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
    }
    return {**files, "streamlit_app": ROOT / "streamlit_app.py"}


def import_graph() -> dict[str, set[str]]:
    """module -> the product modules it imports."""
    graph = {m: _imports(p, PACKAGES) for m, p in product_files().items()}
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
                return stack[stack.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def layer_breaks(
    graph: dict[str, set[str]], layers: list[tuple[str, tuple[str, ...], bool]]
) -> list[tuple[str, str]]:
    """(module, what it imports) for every import into a higher layer, or across a layer whose modules stand apart."""
    level = {m: layer_of(m, layers) for m in graph}
    return [
        (m, d)
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if level[d] > level[m] or (level[d] == level[m] and not layers[level[m]][2])
    ]


def test_no_import_cycles_and_core_never_imports_ui():
    graph = import_graph()
    assert "core.models.savedmodel" in graph and "ui.run_view" in graph and "pages.4_evaluate" in graph
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))
    assert not [
        (m, d)
        for m, deps in graph.items()
        if m.startswith("core.")
        for d in deps
        if not d.startswith("core.")
    ]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]  # the check itself finds a cycle


def test_views_never_import_each_other():
    graph = import_graph()
    below = {
        "ui.common",
        "ui.auth",
        "ui.__init__",
        "ui.working_settings",
        "ui.corrections",
    }  # what the views share sits here, below them
    views = {m for m in graph if m.startswith("ui.") and m not in below}
    assert {"ui.explorer_view", "ui.eval_view", "ui.setup_form"} <= views
    assert {m: graph[m] & views for m in views if graph[m] & views} == {}


def test_every_module_has_a_layer_by_its_package():
    prefixes = [p for _, ps, _ in LAYERS for p in ps]
    assert len(prefixes) == len(set(prefixes)), "a prefix is placed twice"
    assert [m for m in product_files() if layer_of(m) < 0] == [], "a module outside every layer's prefix"
    assert layer_of("core.data.new_source_kind") == layer_of("core.data.sources")  # a new module needs no row
    assert layer_of("ui.common") < layer_of("ui.run_view") < layer_of("pages.3_train")


def test_core_is_packages_along_the_data_flow():
    flat = sorted(p.name for p in (ROOT / "core").glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "cli.py"], "core/ holds packages; a new module goes in one"
    assert [(ROOT / "core" / pkg / "__init__.py").read_text() for pkg in ("base", "data", "train")] == [
        "",
        "",
        "",
    ]


def test_loading_a_model_never_reaches_the_download_code():
    graph = import_graph()
    seen, todo = set(), ["core.evaluation.predict", "core.models.savedmodel", "core.models.onnx_export"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += sorted(graph[m])
    assert "core.models.pretrained" not in seen


def test_imports_point_down_the_layers():
    breaks = layer_breaks(import_graph(), LAYERS)
    assert [f"{m} imports {d}" for m, d in breaks if (m, d) not in KNOWN_BREAKS] == []
    assert sorted(set(KNOWN_BREAKS) - set(breaks)) == [], "fixed: remove these from KNOWN_BREAKS"


def test_the_layer_check_finds_upward_and_sideways_imports():
    layers = [("low", ("a",), True), ("views", ("v", "w"), False)]
    assert layer_of("a.b", layers) == 0 and layer_of("ab", layers) == -1
    assert layer_breaks({"a": {"v"}, "v": {"a"}, "w": set()}, layers) == [("a", "v")]
    assert layer_breaks({"a": set(), "v": {"w"}, "w": set()}, layers) == [("v", "w")]
