"""The progress record: what progress.json holds, read back typed, from old and partial files too."""

from __future__ import annotations

import json
import math

from core.runs.progress import Progress, ProgressRecord, read_progress


def test_record_round_trips_through_the_writer(tmp_path):
    prog = Progress(tmp_path, "j1")
    row = {"epoch": 0, "phase": "frozen", "train_loss": 0.9, "valid_loss": 0.8}
    prog.update(
        phase="training", fold=1, n_folds=5, epoch=2, n_epochs=4, batch=3, n_batches=7, train_loss=0.5
    )
    prog.update(eta_s=12.0, elapsed_s=3.0, last_epoch=row, best_epoch=1, best_value=0.8, monitor="valid_loss")
    prog.update(step=9, force=True)  # a task's own field
    rec = ProgressRecord.read(tmp_path)
    assert rec.written and rec.job_id == "j1" and rec.phase == "training" and rec.updated
    assert (rec.fold, rec.n_folds, rec.epoch, rec.n_epochs, rec.batch, rec.n_batches) == (1, 5, 2, 4, 3, 7)
    assert (rec.train_loss, rec.eta_s, rec.elapsed_s, rec.best_epoch, rec.monitor) == (
        0.5,
        12.0,
        3.0,
        1,
        "valid_loss",
    )
    assert rec.last_epoch == row and rec.last_valid_loss() == 0.8 and rec.extra == {"step": 9}
    assert prog.snapshot() == rec
    assert ProgressRecord.from_dict(rec.to_dict()) == rec
    assert ProgressRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_missing_file_and_missing_keys_read_as_defaults(tmp_path):
    empty = ProgressRecord.read(tmp_path)
    assert not empty.written and empty == ProgressRecord()
    assert (empty.phase, empty.n_epochs, empty.n_batches, empty.fold, empty.eta_s, empty.last_epoch) == (
        "",
        0,
        0,
        None,
        None,
        {},
    )
    (tmp_path / "progress.json").write_text(
        '{"phase": "starting", "message": "worker started", "updated": 1.5}'
    )
    rec = ProgressRecord.read(tmp_path)
    assert rec.written and rec.phase == "starting" and rec.message == "worker started" and rec.n_epochs == 0
    (tmp_path / "progress.json").write_text('{"epoch": 3, "los')  # torn file: read as none
    assert not ProgressRecord.read(tmp_path).written


def test_an_older_file_with_odd_values_still_reads(tmp_path):
    old = {"job_id": "x", "phase": "training", "epoch": "1", "n_epochs": 3.0, "batch": None, "fold": None}
    old.update(train_loss=float("nan"), eta_s="12.5", last_epoch=None, per_fold="?", best_epoch=True)
    (tmp_path / "progress.json").write_text(json.dumps(old))  # NaN written as Python's json writes it
    rec = ProgressRecord.read(tmp_path)
    assert (rec.epoch, rec.n_epochs, rec.batch, rec.fold, rec.eta_s) == (1, 3, 0, None, 12.5)
    assert math.isnan(rec.train_loss or 0.0) and rec.last_epoch == {} and rec.per_fold == []
    assert rec.best_epoch is None and rec.last_valid_loss() is None


def test_a_diverged_loss_is_written_as_strict_json_and_reads_back_as_nan(tmp_path):
    Progress(tmp_path).update(
        force=True, phase="training", train_loss=float("nan"), last_epoch={"valid_loss": math.inf}
    )
    json.loads((tmp_path / "progress.json").read_text(), parse_constant=lambda c: 1 / 0)  # no NaN literal
    assert read_progress(tmp_path)["train_loss"] == "nan"
    rec = ProgressRecord.read(tmp_path)
    assert math.isnan(rec.train_loss or 0.0) and rec.last_valid_loss() is None


def test_every_field_the_app_writes_is_a_field_of_the_record():
    """What core writes through Progress.update lands in a typed field, never in `extra` (a typo would)."""
    import ast
    from dataclasses import fields
    from pathlib import Path

    names = {f.name for f in fields(ProgressRecord)} - {"written", "extra"}
    written: set[str] = set()
    for path in (Path(__file__).resolve().parents[1] / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "update"
            ):
                target = ast.unparse(node.func.value)
                if "progress" in target.lower():
                    written |= {k.arg for k in node.keywords if k.arg and k.arg != "force"}
    assert {"phase", "epoch", "n_batches", "last_epoch", "best_epoch"} <= written  # the scan sees the writers
    assert written <= names, written - names
