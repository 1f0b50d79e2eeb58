"""The multi-label "did not learn" rule (issue 25) on planted predictions: the same findings for every image, no
finding's AUC distinguishable from chance, and a model that learned (no warning); metrics.json's warnings at the end
of training, the evaluation's and the browser's come from the one rule (core.evaluation.multilabel.model_warnings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import labels as labels_mod
from core.evaluation import bytask, evaluate, multilabel

FINDINGS = ["Edema", "Effusion", "Mass"]


def _labels(n: int = 60) -> list[str]:
    """Varied label sets: each finding positive in half the images, in a different pattern."""
    rows = []
    for i in range(n):
        rows.append("|".join(f for k, f in enumerate(FINDINGS) if (i >> k) & 1) or "No Finding")
    return rows


def _frame(labels: list[str], probs: np.ndarray) -> pd.DataFrame:
    df = multilabel.predictions_frame([f"{i}.png" for i in range(len(labels))], probs, FINDINGS)
    df.insert(1, "label", [labels_mod.canonical(v.split("|") if v != "No Finding" else []) for v in labels])
    df["group"] = [f"p{i // 2}" for i in range(len(labels))]  # two images per patient
    return df


def _truth(labels: list[str]) -> np.ndarray:
    return np.array([[f in lab.split("|") for f in FINDINGS] for lab in labels], dtype=float)


def test_the_same_findings_for_every_image_is_warned():
    labels = _labels()
    probs = np.tile([0.9, 0.1, 0.2], (len(labels), 1))  # Edema, always and only
    warned = multilabel.frame_warnings(_frame(labels, probs), FINDINGS, n_resamples=50)
    assert "100% of the 60 images the same findings (Edema)" in warned[0]
    assert warned[-1] == evaluate.ADVICE


def test_scores_that_order_no_finding_better_than_chance_are_warned():
    labels = _labels()
    y = _truth(labels)
    # each finding's positives and negatives get the same spread of scores (AUC 0.5), decisions vary by image
    ranks = np.argsort(np.argsort(y + np.arange(len(y))[:, None] * 1e-3, axis=0, kind="stable"), axis=0)
    probs = 0.2 + 0.6 * ((ranks % 30) / 29.0)
    warned = multilabel.frame_warnings(_frame(labels, probs), FINDINGS, n_resamples=200)
    assert len(warned) == 2 and "No finding's ROC AUC is distinguishable from chance" in warned[0]
    assert "each of the 3 findings" in warned[0]


def test_a_model_that_learned_gets_no_warning_and_one_learned_finding_is_enough():
    labels = _labels()
    y = _truth(labels)
    assert multilabel.frame_warnings(_frame(labels, 0.1 + 0.8 * y), FINDINGS, n_resamples=100) == []
    mixed = np.full(y.shape, 0.5)
    mixed[:, 0] = 0.1 + 0.8 * y[:, 0]  # Edema learned, the others constant (AUC 0.5)
    mixed[:, 1:] += np.linspace(-0.2, 0.2, len(y))[:, None]  # decisions vary: not one set for all
    assert multilabel.frame_warnings(_frame(labels, mixed), FINDINGS, n_resamples=100) == []


def test_a_run_and_its_evaluation_say_it_with_the_same_rule(tmp_path: Path):
    labels = _labels()
    frame = _frame(labels, np.tile([0.9, 0.1, 0.2], (len(labels), 1)))
    frame.to_csv(tmp_path / "valid_predictions.csv", index=False)
    task = {"type": "multilabel", "findings": FINDINGS, "thresholds": {f: 0.5 for f in FINDINGS}}
    (tmp_path / "metrics.json").write_text(json.dumps({"type": "single", "classes": FINDINGS, "task": task}))
    from_run = bytask.run_warnings(tmp_path)
    assert from_run and "same findings (Edema)" in from_run[0]
    assert bytask.run_warnings(tmp_path, FINDINGS, task) == from_run  # what training writes to metrics.json
    ev = bytask.evaluate_run(tmp_path, n_resamples=50)
    assert ev["sets"]["valid"]["warnings"][0] == from_run[0]


def test_the_train_page_shows_a_multilabel_run_that_learned_nothing():
    from core.runs.jobs import JobStore
    from tests.test_app_pages import TRAIN, app, running_job

    job = running_job()
    rdir = Path(job.run_dir)
    labels = _labels(20)
    _frame(labels, np.tile([0.9, 0.1, 0.2], (20, 1))).to_csv(rdir / "valid_predictions.csv", index=False)
    task = {"type": "multilabel", "findings": FINDINGS, "thresholds": {f: 0.5 for f in FINDINGS}}
    summary = {"type": "single", "classes": FINDINGS, "task": task, "best_epoch": 0, "metrics": {"valid": {}}}
    (rdir / "metrics.json").write_text(json.dumps(summary))
    JobStore().finish(job.id, "done")
    at = app(TRAIN).run()
    assert not at.exception, at.exception
    assert any("100% of the 20 images the same findings (Edema)" in w.value for w in at.warning), at.warning
