"""Layering rules: core never imports streamlit or ui; no import cycles; imports point down the layers below.

The product's modules stand in the layers of LAYERS, bottom first. A module imports modules of its own layer or of
lower ones, never of a higher one; the views of the UI (and the pages) never import each other: what they share sits
in a layer below them. Imports inside functions count as much as those at the top of a file.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "ui", "pages")

# The layers, bottom first: (name, modules, whether its modules may import each other).
LAYERS: list[tuple[str, tuple[str, ...], bool]] = [
    # where state lives, how files are written, typed settings, keyed pseudonyms
    (
        "foundation",
        (
            "core.__init__",
            "core.paths",
            "core.fsutil",
            "core.config",
            "core.privacy",
            "core.eta",
            "core.choices",
            "core.fmt",
        ),
        True,
    ),
    # the run folder's files, and the job store with the progress channel training reports through; the queue
    # names its tasks ("core.train:run_task") and core.worker imports them, so jobs needs nothing above it
    ("runs and jobs", ("core.runs", "core.jobs", "core.executors"), True),
    # any file -> an image; sources -> an items table; items -> DataLoaders
    (
        "images and data",
        (
            "core.imaging",
            "core.sample",
            "core.sources",
            "core.memloader",
            "core.data",
            "core.augment_preview",
        ),
        True,
    ),
    # the architecture catalogue, and weight files checked before anything is loaded (each stands alone)
    ("network parts", ("core.archs", "core.weightfiles"), False),
    # starting weights for training, the saved-model format prediction loads through, the ONNX export: apart from
    # each other, so loading a model for prediction never reaches the download code
    ("models", ("core.pretrained", "core.savedmodel", "core.onnx_export"), False),
    # training, prediction and everything measured or drawn from a run
    (
        "learning",
        (
            "core.evaluate",
            "core.plots",
            "core.checks",
            "core.explain",
            "core.predict",
            "core.train",
            "core.finish",
            "core.report",
            "core.experiments",
        ),
        True,
    ),
    # the doors into core: the web server's uploads, hosting rules, sign-in and kept settings; the worker; the CLI
    (
        "doors",
        (
            "core.uploads",
            "core.hosting",
            "core.signin",
            "core.settings_store",
            "core.worker",
            "core.ray_supervisor",
            "core.cli",
            "core.__main__",
        ),
        True,
    ),
    # what the views share: Streamlit caches, session keys, run-folder readers, sign-in
    ("ui shared", ("ui.__init__", "ui.auth", "ui.common"), True),
    # one module of widgets per page; views never import each other
    (
        "ui views",
        (
            "ui.setup_form",
            "ui.run_view",
            "ui.eval_view",
            "ui.predict_view",
            "ui.checks_view",
            "ui.explorer_view",
            "ui.experiment_view",
        ),
        False,
    ),
    # the router and the pages (thin); pages never import each other
    (
        "app",
        (
            "streamlit_app",
            "pages.1_dataset",
            "pages.2_setup",
            "pages.3_train",
            "pages.4_evaluate",
            "pages.5_predict",
            "pages.6_experiments",
        ),
        False,
    ),
]

# Imports that break the rules, each with why it is still here; the test fails when one is gone, so that this list
# only shrinks (empty since the views' shared parts moved to ui.common).
KNOWN_BREAKS: dict[tuple[str, str], str] = {}


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
    files = {f"{p.parent.name}.{p.stem}": p for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))}
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
    level = {m: (i, sideways) for i, (_, mods, sideways) in enumerate(layers) for m in mods}
    return [
        (m, d)
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if level[d][0] > level[m][0] or (level[d][0] == level[m][0] and not level[m][1])
    ]


def test_no_import_cycles_and_core_never_imports_ui():
    graph = import_graph()
    assert "core.savedmodel" in graph and "ui.run_view" in graph and "pages.4_evaluate" in graph
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
    below = {"ui.common", "ui.auth", "ui.__init__"}  # what the views share sits here, below them
    views = {m for m in graph if m.startswith("ui.") and m not in below}
    assert {"ui.explorer_view", "ui.eval_view", "ui.setup_form"} <= views
    assert {m: graph[m] & views for m in views if graph[m] & views} == {}


def test_every_module_has_one_layer():
    placed = [m for _, mods, _ in LAYERS for m in mods]
    assert len(placed) == len(set(placed)), "a module is placed twice"
    assert sorted(placed) == sorted(product_files()), (
        "place each new module in LAYERS (and a removed one out)"
    )


def test_imports_point_down_the_layers():
    breaks = layer_breaks(import_graph(), LAYERS)
    assert [f"{m} imports {d}" for m, d in breaks if (m, d) not in KNOWN_BREAKS] == []
    assert sorted(set(KNOWN_BREAKS) - set(breaks)) == [], "fixed: remove these from KNOWN_BREAKS"


def test_the_layer_check_finds_upward_and_sideways_imports():
    layers = [("low", ("a",), True), ("views", ("v", "w"), False)]
    assert layer_breaks({"a": {"v"}, "v": {"a"}, "w": set()}, layers) == [("a", "v")]
    assert layer_breaks({"a": set(), "v": {"w"}, "w": set()}, layers) == [("v", "w")]
