"""Multi-label and ordinal k-fold runs score their held-out test split like single-label ones (core.train.kfold_test):
the fold ensemble's probabilities are the mean of the folds' (planted fold models: random 32 px resnet18s with their
own normalisation), a multi-label ensemble decides at the run's thresholds, the test table has the task's columns and
metrics.json the task's test metrics under the single-label keys; one 1-epoch k=2 run checks the wiring."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.base.config import RunConfig, SourceConfig
from core.evaluation import bytask, evaluate, multilabel, ordinal
from core.models import archs, heads
from core.models.savedmodel import Manifest, save_model
from core.runs import rundir

FINDINGS = ["effusion", "nodule"]
GRADES = ["0", "1", "2"]
RUN_THRESHOLDS = {"effusion": 0.2, "nodule": 0.8}  # the run's (pooled out-of-fold), unlike each fold's own
ML_LABELS = ["effusion", "nodule", "effusion|nodule", "(no finding)"]


def _record(task: str) -> dict:
    """The run's task record as metrics.json and the final model's manifest carry it."""
    if task == "multilabel":
        return {
            "type": task,
            "findings": FINDINGS,
            "thresholds": RUN_THRESHOLDS,
            "thresholds_from": "planted",
        }
    return {"type": task, "order": GRADES, "head": "corn"}


def _save(folder, task: str, classes: list[str], seed: int, record: dict) -> None:
    """A random resnet18 of the task (its own seed and normalisation) saved as a model folder."""
    torch.manual_seed(seed)
    m = Manifest(
        arch="resnet18",
        classes=classes,
        img_size=32,
        mean=[0.4 + 0.05 * seed] * 3,
        std=[0.25] * 3,
        task=record,
    )
    save_model(archs.create_model("resnet18", heads.n_outputs(task, len(classes))).eval(), folder, m)


def _plant(tmp_path, task: str, final: bool) -> tuple[rundir.RunFolder, pd.DataFrame, list[str]]:
    """A k=2 run folder of `task` (fold models whose own thresholds differ from the run's; a final model when
    `final`), its metrics.json, and an items table: 10 test items of 5 patients and 2 training items."""
    classes = FINDINGS if task == "multilabel" else GRADES
    run = rundir.RunFolder(tmp_path / "run")
    for i in range(2):
        own = (
            {**_record(task), "thresholds": {f: 0.5 for f in FINDINGS}}
            if task == "multilabel"
            else _record(task)
        )
        _save(run.fold_dir(i), task, classes, i, own)
    if final:
        _save(run.model_dir, task, classes, 7, _record(task))
    run.write(rundir.METRICS, {"type": "kfold", "k": 2, "classes": classes, "task": _record(task)})
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for n in range(12):
        path = tmp_path / "img" / f"x{n}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        label = ML_LABELS[n % 4] if task == "multilabel" else GRADES[n % 3]
        rows.append(
            {"path": str(path), "label": label, "group": f"p{n // 2}", "split": "test" if n < 10 else ""}
        )
    return run, pd.DataFrame(rows), classes


def _config(task: str) -> RunConfig:
    cfg = RunConfig()
    cfg.data.task.type = task
    return cfg


@pytest.mark.parametrize("task", ["multilabel", "ordinal"])
def test_a_task_ensemble_is_the_mean_of_its_folds_decided_as_one_model(tmp_path, task):
    from core.evaluation.ensemble import EnsemblePredictor
    from core.evaluation.predict import Predictor

    run, items, classes = _plant(tmp_path, task, final=False)
    paths = items["path"].tolist()
    cols = [f"prob_{c}" for c in classes]
    got = EnsemblePredictor(run.path, device="cpu").predict_paths(paths)[0]
    folds = [
        Predictor(run.fold_dir(i), device="cpu").predict_paths(paths)[0][cols].to_numpy() for i in range(2)
    ]
    assert not np.allclose(folds[0], folds[1])  # the members differ, so the mean means something
    mean = np.mean(folds, axis=0)
    np.testing.assert_allclose(got[cols].to_numpy(), mean, atol=1e-6)
    if task == "ordinal":  # the grade rule on the mean of the grade probabilities
        assert got["pred"].tolist() == [GRADES[i] for i in ordinal.predicted_grade(mean)]
        np.testing.assert_allclose(got["expected_grade"], ordinal.expected_grade(mean), atol=1e-6)
    else:  # each finding at the run's threshold, not fold 1's 0.5
        for i, f in enumerate(FINDINGS):
            assert got[f"pred_{f}"].tolist() == (mean[:, i] >= RUN_THRESHOLDS[f]).astype(int).tolist()
    from core.cli import main  # the CLI's --ensemble (as the Predict page's "all folds as one model") agrees

    out = tmp_path / "p.csv"
    assert (
        main(["predict", "--model", str(run.path), str(tmp_path / "img"), "--ensemble", "--out", str(out)])
        == 0
    )
    cli = pd.read_csv(out, keep_default_na=False).set_index("path").loc[paths]
    np.testing.assert_allclose(cli[cols].to_numpy(), mean, atol=1e-5)
    decided = [c for c in got if c.startswith("pred_") or c == "pred"]
    assert cli[decided].astype(str).to_numpy().tolist() == got[decided].astype(str).to_numpy().tolist()


def test_the_onnx_ensemble_carries_the_runs_thresholds_and_refuses_ordinal(tmp_path):
    from core.models import onnx_ensemble
    from core.models.weightfiles import ModelFileError

    run, _, _ = _plant(tmp_path / "ml", "multilabel", final=False)
    _, manifests = onnx_ensemble.load_folds(run.path)
    assert manifests[0].task["thresholds"] == RUN_THRESHOLDS
    grades, _, _ = _plant(tmp_path / "od", "ordinal", final=False)
    with pytest.raises(ModelFileError, match="ordinal fold ensembles are not exported"):
        onnx_ensemble.load_folds(grades.path)


@pytest.mark.parametrize("task", ["multilabel", "ordinal"])
@pytest.mark.parametrize("final", [True, False])
def test_a_task_kfold_run_scores_its_test_split(tmp_path, task, final):
    from core.evaluation.ensemble import EnsemblePredictor
    from core.evaluation.predict import Predictor
    from core.train.kfold_test import score_test

    run, items, classes = _plant(tmp_path, task, final)
    scored = score_test(run, items, classes, _config(task), _record(task))
    assert scored["test_model"] == ("final model" if final else "fold ensemble")
    table = pd.read_csv(run.predictions("test"), keep_default_na=False, dtype={"label": str, "pred": str})
    test = items[items["split"] == "test"]
    assert (
        table["path"].tolist() == test["path"].tolist() and table["label"].tolist() == test["label"].tolist()
    )
    assert table["group"].nunique() == 5 and not set(table["group"]) & set(test["group"])  # pseudonymised
    cols = [f"prob_{c}" for c in classes]
    headline = Predictor(run.model_dir) if final else EnsemblePredictor(run.path)
    probs = headline.predict_paths(test["path"].tolist())[0][cols].to_numpy()
    np.testing.assert_allclose(table[cols].to_numpy(), probs, atol=1e-6)
    ens_probs = EnsemblePredictor(run.path).predict_paths(test["path"].tolist())[0][cols].to_numpy()
    if task == "multilabel":
        assert {f"pred_{f}" for f in FINDINGS} <= set(table.columns)
        for i, f in enumerate(FINDINGS):
            assert table[f"pred_{f}"].tolist() == (probs[:, i] >= RUN_THRESHOLDS[f]).astype(int).tolist()
        expected = multilabel.predictions_frame(
            test["path"], ens_probs, FINDINGS, RUN_THRESHOLDS, label=test["label"]
        )
        assert scored["test_ensemble"] == pytest.approx(
            multilabel.point_metrics(expected, FINDINGS, RUN_THRESHOLDS)
        )
        assert {"macro_roc_auc", "exact_match", "roc_auc_nodule"} <= set(scored["test"])
    else:
        assert {"expected_grade", "prob_pred"} <= set(table.columns)
        assert table["pred"].tolist() == [GRADES[i] for i in ordinal.predicted_grade(probs)]
        expected = ordinal.predictions_frame(test["path"], ens_probs, GRADES, label=test["label"])
        assert scored["test_ensemble"] == pytest.approx(ordinal.point_metrics(expected, GRADES), nan_ok=True)
        assert {"qwk", "mae", "off_by_one_accuracy"} <= set(scored["test"])
    # what the Evaluation page, the report and the CLI show
    ev = bytask.evaluate_run(run.path, n_resamples=50)
    name = "macro_roc_auc" if task == "multilabel" else "qwk"
    ci = ev["sets"]["test"]["ci"][name]
    assert ev["sets"]["test"]["n"] == 10 and {"lo", "hi"} <= set(ci)
    # metrics.json's number, with its CI
    assert ci["value"] == pytest.approx(scored["test"][name], nan_ok=True)


def test_a_task_run_without_a_test_split_is_unchanged(tmp_path):
    from core.train.kfold_test import score_test

    run, items, classes = _plant(tmp_path, "multilabel", final=True)
    assert (
        score_test(run, items.assign(split=""), classes, _config("multilabel"), _record("multilabel")) == {}
    )
    assert not run.predictions("test").exists()


def test_a_multilabel_kfold_run_with_a_test_split_end_to_end(tmp_path):
    from core.data import sample_tasks
    from core.runs.progress import Progress
    from core.train.run import train_run

    root = sample_tasks.ensure_multilabel_sample(tmp_path / "ml", n=40, size=32)
    cfg = RunConfig(
        source=SourceConfig(
            kind="csv",
            csv_path=str(root / sample_tasks.FINDING_COLUMNS_CSV),
            group_col="patient_id",
            finding_cols=list(sample_tasks.FINDINGS),
        )
    )
    cfg.train.pretrained, cfg.train.epochs, cfg.train.arch, cfg.train.torch_threads = False, 1, "resnet18", 1
    cfg.data.img_size, cfg.data.batch_size, cfg.data.task.type = 32, 16, "multilabel"
    cfg.data.split.method, cfg.data.split.test_pct, cfg.data.split.k_folds = "group", 0.25, 2
    summary = train_run(cfg.validate(), tmp_path / "run", Progress(tmp_path / "run"))
    saved = json.loads((tmp_path / "run" / rundir.METRICS).read_text())
    assert saved["test_model"] == summary["test_model"] == "fold ensemble"
    assert {"test", "test_ensemble", "pooled_oof"} <= set(saved["metrics"])
    assert saved["metrics"]["test"] == saved["metrics"]["test_ensemble"]  # no final model: the ensemble is it
    table = pd.read_csv(tmp_path / "run" / "test_predictions.csv", keep_default_na=False)
    items = pd.read_csv(tmp_path / "run" / "items.csv", keep_default_na=False)
    assert len(table) == (items["split"] == "test").sum() > 0
    assert {f"pred_{f}" for f in sample_tasks.FINDINGS} | {"group", "label"} <= set(table.columns)
    from core.evaluation import checklist  # the checklist reads the test set and the ensemble's numbers

    topics = {i.topic: i.value for i in checklist.checklist(tmp_path / "run", n_resamples=20)}
    assert (
        "scored by the fold ensemble" in topics["Model selection"]
        and "macro roc auc" in topics["Model selection"]
    )
    assert f"(test set, n = {len(table)})" in " ".join(topics) and "single-label" in topics["Calibration"]
    thresholds = saved["task"]["thresholds"]
    assert saved["metrics"]["test"] == pytest.approx(
        bytask.metrics_from_frame(
            evaluate.labelled(table), list(sample_tasks.FINDINGS), "multilabel", thresholds
        ),
        nan_ok=True,
    )
