"""A run folder and a job database written by the released code (commit 1bc1039, flat core/) still open,
evaluate and predict with today's code.

The fixture tests/fixtures/release_1bc1039/ was made by that release (tests/fixtures/release_1bc1039/HOW.md
holds the generator and how to run it). The old code stores absolute paths under its XRT_HOME (home.txt):
in config.json, job.json, valid_predictions.csv and the job row. Each test copies the fixture into tmp_path
and rewrites those paths to the copy, as a user moving their XRT_HOME would (by a script, never by hand).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core.base.config import RunConfig, from_dict
from core.evaluation import evaluate, report
from core.evaluation.predict import Predictor, score_source
from core.models import savedmodel
from core.runs import jobs
from core.runs.rundir import RunFolder

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "release_1bc1039"
RUN = "release-tiny"
TEXT_FILES = ("config.json", "job.json", "valid_predictions.csv")


def relocate(home: Path) -> None:
    """Rewrite the release's absolute paths (its old XRT_HOME) to `home`, in the run's files and the job table."""
    old, new = (FIXTURE / "home.txt").read_text().strip(), str(home)
    for name in TEXT_FILES:
        f = home / "runs" / RUN / name
        f.write_text(f.read_text().replace(old, new))
    with contextlib.closing(sqlite3.connect(home / "jobs.sqlite3")) as con, con:
        con.execute(
            "UPDATE jobs SET run_dir=replace(run_dir, ?, ?), params=replace(params, ?, ?)", (old, new) * 2
        )


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """The release's XRT_HOME, copied into tmp_path, relocated, and made this test's XRT_HOME."""
    home = tmp_path / "home"
    shutil.copytree(FIXTURE, home)
    relocate(home)
    monkeypatch.setenv("XRT_HOME", str(home))
    return home


@pytest.fixture
def run(home) -> RunFolder:
    """The release's finished run folder."""
    return RunFolder(home / "runs" / RUN)


def test_fixture_is_small_and_holds_no_stray_absolute_paths(home):
    assert sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file()) < 3_000_000
    old = (FIXTURE / "home.txt").read_text().strip()
    texts = [f for f in home.rglob("*") if f.suffix in (".json", ".csv", ".txt") and f.name != "home.txt"]
    assert not [f for f in texts if old in f.read_text()]


def test_job_store_lists_the_release_job_as_done(home, run):
    store = jobs.JobStore(home / "jobs.sqlite3")
    (job,) = store.list()
    assert (job.kind, job.status, Path(job.run_dir)) == ("train", "done", run.path)
    assert store.get(job.id) == job and job.result["classes"] == ["blob", "plain"]
    assert jobs.JobStore().list() == [job]  # the default store of $XRT_HOME is the same file
    assert job.params["config"]["train"]["arch"] == "test_convnext"


def test_run_folder_reads_config_metrics_history_items(run):
    assert run.is_finished() and run.has_final_model() and run.has_checkpoint()
    cfg = from_dict(RunConfig, run.read_config_dict())
    assert (cfg.train.arch, cfg.data.img_size, cfg.train.epochs) == ("test_convnext", 32, 1)
    # Every other setting the release wrote is still valid. The fixture's tiny timm net is the one exception
    # made for size: the release's CLI and UI offered only the catalogue, and a settings schema may refuse it.
    cfg.train.arch = "resnet18"
    cfg.validate()
    assert Path(cfg.source.csv_path).is_file()
    metrics = run.read_metrics()
    assert metrics["type"] == "single" and metrics["classes"] == ["blob", "plain"]
    assert set(metrics["metrics"]["valid"]) >= {"accuracy", "roc_auc"}
    history = pd.read_csv(run.history)
    assert len(history) == metrics["epochs_run"] == 1 and {"epoch", "train_loss", "valid_loss"} <= set(
        history
    )
    items = pd.read_csv(run.items, keep_default_na=False)
    assert {"relpath", "label", "split"} <= set(items) and set(items["split"]) == {"train", "valid"}
    assert run.read_job()["status"] == "done" and run.read_progress()
    assert set(run.models()) and evaluate.provenance(metrics)


def test_evaluation_of_the_release_run(run, tmp_path):
    ev = evaluate.evaluate_run(run.path, n_resamples=50)
    valid = ev["sets"]["valid"]
    assert ev["classes"] == ["blob", "plain"] and valid["n"] == len(pd.read_csv(run.predictions("valid")))
    assert valid["metrics"]["accuracy"] == pytest.approx(run.read_metrics()["metrics"]["valid"]["accuracy"])
    assert isinstance(evaluate.run_warnings(run.path), list)
    rep = report.build_report(run.path, tmp_path / "report", n_resamples=50, png=False)
    assert Path(rep["report"]).is_file()


def test_saved_model_gives_the_release_validation_probabilities_back(run):
    manifest, weights = savedmodel.read_manifest(run.model_dir)
    fields = manifest if isinstance(manifest, dict) else vars(manifest)  # a dict, or a typed record
    assert (fields["arch"], fields["classes"], weights.name) == (
        "test_convnext",
        ["blob", "plain"],
        "model.safetensors",
    )
    valid = pd.read_csv(run.predictions("valid"))
    pred = Predictor(run.model_dir, device="cpu")
    df, problems = pred.predict_paths(valid["path"].tolist(), labels=valid["label"].tolist())
    assert problems.empty and df["path"].tolist() == valid["path"].tolist()
    for c in pred.classes:
        np.testing.assert_allclose(df[f"prob_{c}"], valid[f"prob_{c}"], atol=1e-4)


def test_scoring_the_release_source_as_an_external_test_set(run):
    cfg = from_dict(RunConfig, run.read_config_dict())
    scored = score_source(Predictor(run.path, device="cpu"), cfg.source)
    assert len(scored.predictions) == len(pd.read_csv(run.items)) and scored.problems.empty


def test_cli_lists_predicts_and_evaluates_the_release_run(run, home, tmp_path, capsys):
    from core.cli import main

    assert main(["runs"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["status"], Path(listed["run_dir"])) == ("done", run.path)
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(run.path), str(home / "data" / "blob"), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["predicted"] == 12 == len(pd.read_csv(out))
    csv = str(home / "data" / "labels.csv")
    assert main(["evaluate", "--model", str(run.path), "--csv", csv, "--no-report"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 24


def test_evaluation_page_opens_the_release_run(home):
    at = AppTest.from_file(str(ROOT / "pages/4_evaluate.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    (job,) = jobs.JobStore().list()
    assert at.selectbox(key="ev_run").value == job.id
    assert "validation" in at.dataframe[0].value
