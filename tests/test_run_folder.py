"""The run folder: its file names are spelled only in core/runs/rundir.py, and RunFolder answers the questions about a run."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from core.runs import rundir
from core.runs.rundir import RunFolder

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("core", "ui", "pages", "bench", "streamlit_app.py")
ALLOWED = {"core/runs/rundir.py"}

NAMES = {
    v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str) and not v.startswith(".")
}  # not
# a bare extension (".safetensors" is a file format, not a name in the run folder)
NAMES |= {rundir.predictions_name(s) for s in rundir.PREDICTION_SETS}
FILES = {n for n in NAMES if "." in n}  # "metrics.json", "_predictions.csv": a run file wherever they appear
WORDS = (
    NAMES - FILES
)  # "model", "folds", "STOP", "checkpoints" ...: also ordinary words, so only as path parts
NOT_RUN = "not a run folder"  # a comment on a line that names another folder so (torch hub's "checkpoints")
PATH_CALLS = {
    "join",
    "joinpath",
    "glob",
    "rglob",
    "Path",
    "PurePath",
    "with_name",
    "exists",
    "is_file",
    "is_dir",
}
PATH_NAME_ENDS = ("_FILE", "_DIR", "_NAME", "_PATH", "_FOLDER")
PLACEHOLDER = "\0"  # stands for a formatted value in an f-string's text


def _file_pattern(name: str) -> re.Pattern:
    """A file name inside a longer text, not part of a longer name."""
    head = "" if not (name[0].isalnum()) else r"(?<![\w-])"
    return re.compile(head + re.escape(name) + r"(?![\w])")


FILE_PATTERNS = [(n, _file_pattern(n)) for n in sorted(FILES)]
WORD_WITH_VALUE = re.compile(r"(?:^|[_/])(" + "|".join(sorted(WORDS)) + ")" + PLACEHOLDER)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (prose)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _text(node: ast.AST) -> str | None:
    """The text of a string constant, or of an f-string with PLACEHOLDER for each formatted value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else PLACEHOLDER for v in node.values)
    return None


def _named_as_paths(node: ast.Assign) -> set[int]:
    """ids of the values an assignment gives to names like STOP_FILE or MODEL_DIR (also in tuple assignments)."""
    pairs = []
    for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
            pairs += zip(target.elts, node.value.elts)
        else:
            pairs.append((target, node.value))
    return {id(v) for t, v in pairs if isinstance(t, ast.Name) and t.id.upper().endswith(PATH_NAME_ENDS)}


def _path_operands(tree: ast.AST) -> set[int]:
    """ids of the strings used as path parts: operands of `/`, arguments of path calls (join, glob, Path ...) and
    values of names like STOP_FILE."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            out |= _named_as_paths(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            out |= {id(node.left), id(node.right)}
        elif isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in PATH_CALLS:
                out |= {id(a) for a in node.args}
    return out


def _waived_lines(source: str) -> set[int]:
    """Lines whose comment says they name something else than a run folder's file."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0] for t in tokens if t.type == tokenize.COMMENT and NOT_RUN in t.string}


def literal_run_names(source: str) -> list[tuple[int, str]]:
    """(line, name) of each run-folder file name written as a string literal in Python source (prose aside)."""
    tree, waived = ast.parse(source), _waived_lines(source)
    pieces = {id(v) for j in ast.walk(tree) if isinstance(j, ast.JoinedStr) for v in j.values}
    skip, paths = _docstrings(tree) | pieces, _path_operands(tree)  # an f-string's pieces: checked as a whole
    found = []
    for node in ast.walk(tree):
        text = None if id(node) in skip else _text(node)
        if text is None:
            continue
        hits = [n for n, pat in FILE_PATTERNS if pat.search(text)]
        hits += [text.split("*")[0]] if id(node) in paths and text.split("*")[0] in WORDS else []
        hits += WORD_WITH_VALUE.findall(text)
        found += [(node.lineno, h) for h in hits if node.lineno not in waived]
    return found


def product_files() -> list[Path]:
    """Every Python file of the product (tests aside)."""
    out = []
    for entry in SCANNED:
        p = ROOT / entry
        out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    return out


def test_the_scanner_sees_literals_and_not_prose():
    src = '''
"""Writes metrics.json and history.csv (prose)."""
from pathlib import Path
def f(run: Path, i: int):
    """Reads model/ and folds/fold<i>/ (prose)."""
    # metrics.json in a comment
    a = run / "metrics.json"
    b = run / "folds" / f"fold{i}"
    c = {"model": 1, "fold": 2}["model"]
    d = run.glob("fold*")
    e = f"{run}/valid_predictions.csv"
    g = Path(run, "STOP")
    h = f"best_fold{i}.safetensors"
    k = "the fold column and the folder source", ("PROTO", "STOP")
    hub = Path("/hub") / "checkpoints"  # not a run folder: torch hub's cache
    MODEL_DIR, LOG = "model", "log"
'''
    found = {name for _, name in literal_run_names(src)}
    assert found == {
        "metrics.json",
        "folds",
        "fold",
        "valid_predictions.csv",
        "_predictions.csv",
        "STOP",
        "model",
    }
    lines = {line for line, _ in literal_run_names(src)}
    assert lines == {7, 8, 10, 11, 12, 13, 16}


def test_no_run_folder_file_name_outside_core_runs():
    offenders = []
    for path in product_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED:
            continue
        offenders += [
            f"{rel}:{line}: {name!r}" for line, name in literal_run_names(path.read_text(encoding="utf-8"))
        ]
    assert not offenders, "run-folder names spelled outside core/runs/rundir.py:\n" + "\n".join(offenders)


# ---------------------------------------------------------------- RunFolder


def _model(folder: Path) -> Path:
    """A model folder as the saved-model format leaves it (the manifest is what marks it)."""
    folder.mkdir(parents=True)
    (folder / rundir.MODEL_MANIFEST).write_text("{}")
    (folder / rundir.MODEL_WEIGHTS).write_bytes(b"")
    return folder


def _finished(path: Path) -> RunFolder:
    """A run folder whose training ended with results."""
    run = RunFolder(path)
    path.mkdir(parents=True, exist_ok=True)
    run.write(rundir.CONFIG, {})
    run.write(rundir.METRICS, {"type": "single", "accuracy": float("nan")})
    return run


def test_models_of_a_single_run_and_of_a_kfold_run(tmp_path):
    single = RunFolder(tmp_path / "single")
    assert single.models() == {}
    _model(single.model_dir)
    assert single.models() == {"final model": single.model_dir}
    kfold = RunFolder(tmp_path / "kfold")
    for i in (1, 0, 10, 2):
        _model(kfold.fold_dir(i))
    (kfold.folds_dir / "fold3").mkdir()  # a fold that never saved its model
    (kfold.folds_dir / "foldx").mkdir()
    assert list(kfold.models()) == ["fold 1", "fold 2", "fold 3", "fold 11"]  # fold order, shown from 1
    assert kfold.models()["fold 1"] == kfold.fold_dir(0)
    assert kfold.fold_model(10) == kfold.fold_dir(10) and kfold.fold_model(3) is None
    _model(kfold.model_dir)
    assert next(iter(kfold.models())) == "final model"


def test_is_finished_needs_metrics(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert not run.is_finished()
    run.path.mkdir()
    run.write(rundir.CONFIG, {})
    assert not run.is_finished()  # training started, no results yet
    run.write(rundir.METRICS, {"x": float("inf")})
    assert run.is_finished() and run.read_metrics() == {"x": None}


def test_of_model_finds_the_run_of_a_final_or_fold_model(tmp_path):
    run = _finished(tmp_path / "run")
    final, fold = _model(run.model_dir), _model(run.fold_dir(1))
    assert rundir.of_model(final) == run
    assert rundir.of_model(final / rundir.MODEL_MANIFEST) == run
    assert rundir.of_model(fold / rundir.MODEL_MANIFEST) == run
    assert rundir.of_model(_model(tmp_path / "alone")) is None
    assert rundir.of_model(_model(tmp_path / "unfinished" / rundir.MODEL_DIR)) is None


def test_run_folder_by_path_or_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("XRT_HOME", str(tmp_path / "home"))
    from core.base import paths

    named = paths.runs_dir() / "abc123"
    named.mkdir(parents=True)
    assert rundir.run_folder("abc123").path == named
    assert rundir.run_folder(tmp_path / "elsewhere").path == tmp_path / "elsewhere"


def test_checkpoint_names_and_prediction_sets(tmp_path):
    run = RunFolder(tmp_path)
    assert run.checkpoint() == run.best_checkpoint
    assert run.checkpoint(2).parent == run.checkpoints and run.checkpoint(2) != run.checkpoint(1)
    assert {p.name for p in run.result_files()} >= {
        rundir.METRICS,
        rundir.HISTORY,
        rundir.predictions_name("oof"),
    }
    with pytest.raises(ValueError, match="unknown prediction set"):
        run.predictions("train")


def test_items_read_back_as_the_text_written(tmp_path):
    run = RunFolder(tmp_path)
    run.items.write_text(
        "relpath,label,split,kind,group\n"
        "a/1.png,0,train,png,007\n"
        "a/2.png,1,valid,png,\n"
        "a/3.png,01,test,dicom,NA\n"
    )
    items = run.read_items()
    assert items["label"].tolist() == ["0", "1", "01"] and items["group"].tolist() == ["007", "", "NA"]
    assert items["relpath"].tolist() == ["a/1.png", "a/2.png", "a/3.png"] and items["kind"].iloc[2] == "dicom"
    items.assign(fold=[0, 1, -1]).to_csv(run.items, index=False)  # k-fold adds its fold column
    again = run.read_items()
    assert again["label"].tolist() == ["0", "1", "01"] and again["group"].tolist() == ["007", "", "NA"]
    assert again["fold"].tolist() == [0, 1, -1] and again["fold"].dtype.kind == "i"
    again[["relpath", "label", "split", "fold"]].rename(columns={"relpath": "path"}).to_csv(
        run.fold_items, index=False
    )
    assert run.read_fold_items()["label"].tolist() == ["0", "1", "01"]


def test_history_reads_numbers_as_numbers_and_the_phase_as_text(tmp_path):
    run = RunFolder(tmp_path)
    run.history.write_text(
        "epoch,phase,train_loss,valid_loss,time_s\n0,frozen,0.9,nan,1.0\n1,unfrozen,0.5,0.4,2.0\n"
    )
    hist = run.read_history()
    assert hist["epoch"].tolist() == [0, 1] and hist["phase"].tolist() == ["frozen", "unfrozen"]
    assert hist["valid_loss"].isna().tolist() == [True, False] and hist["train_loss"].dtype.kind == "f"
    with pytest.raises(OSError):
        RunFolder(tmp_path / "none").read_history()
