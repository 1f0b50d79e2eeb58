"""Multi-label and ordinal task types (issue 25): label parsing, grade order, iterative stratification, heads and
losses, metrics with patient-level CIs on planted predictions, and both tasks end to end on the synthetic samples."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from core.base.config import ConfigError, RunConfig, SourceConfig
from core.cli import main
from core.data import labels as lab
from core.data import sample_tasks
from core.data.items import SourceError
from core.evaluation import bytask, multilabel, ordinal, taskstats
from core.models import heads

# ---------------------------------------------------------------- labels


def test_a_delimited_cell_becomes_a_sorted_set_and_no_finding_an_empty_one():
    assert lab.split_cell("Infiltration|Effusion", "|", "No Finding") == "Effusion|Infiltration"
    assert lab.split_cell("Effusion; Mass", ";", "No Finding") == "Effusion|Mass"
    assert lab.split_cell("No Finding", "|", "No Finding") == lab.EMPTY
    assert lab.split_cell("", "|", "No Finding") == ""  # unlabelled stays unlabelled


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("ignore", "a|?b"), ("positive", "a|b"), ("negative", "a")],
)
def test_an_uncertain_finding_follows_the_policy(policy, expected):
    df = pd.DataFrame({"a": [1, 0, ""], "b": [-1, 0, 0]})
    out = lab.from_finding_columns(df, ["a", "b"], policy)
    assert out.tolist() == [expected, lab.EMPTY, lab.EMPTY]
    assert lab.encode(out[0], ["a", "b"]).tolist() == (
        [1, -1] if policy == "ignore" else [1, int(policy == "positive")]
    )


def test_a_finding_column_with_other_values_is_refused_with_the_row():
    with pytest.raises(SourceError, match="row 2"):
        lab.from_finding_columns(pd.DataFrame({"a": [1, "yes"]}), ["a"], "ignore")


def test_grade_order_is_inferred_from_numbered_names_and_refused_otherwise():
    assert lab.infer_order(["KL10", "KL2", "KL0", "KL1"]) == ["KL0", "KL1", "KL2", "KL10"]
    assert lab.infer_order(["3", "0", "1", "2", "4"]) == ["0", "1", "2", "3", "4"]
    assert lab.infer_order(["normal", "pneumonia"]) is None
    assert lab.infer_order(["KL0", "grade1"]) is None
    assert lab.grade_order(["mild", "none"], ["none", "mild", "severe"]) == ["none", "mild", "severe"]
    with pytest.raises(SourceError, match="cannot be inferred"):
        lab.grade_order(["mild", "none"], [])
    with pytest.raises(ConfigError, match="twice"):
        RunConfig().data.task.__class__(type="ordinal", order=["a", "a"]).validate()


def test_the_task_a_table_suggests():
    delimited = pd.DataFrame({"path": ["x", "y"], "label": ["A|B", "No Finding"]})
    assert lab.suggest_task(delimited)["task"] == "multilabel"
    assert lab.suggest_task(delimited)["delimiter"] == "|"
    columns = pd.DataFrame(
        {"path": ["x", "y"], "label": ["", ""], "a": [1, 0], "b": [-1, 1], "age": [40, 51]}
    )
    assert lab.suggest_task(columns, exclude=["path"])["finding_cols"] == ["a", "b"]
    grades = pd.DataFrame({"label": ["KL0", "KL2", "KL1", "KL4", "KL3"]})
    assert lab.suggest_task(grades)["order"] == ["KL0", "KL1", "KL2", "KL3", "KL4"]
    assert lab.suggest_task(pd.DataFrame({"label": ["cat", "dog"]}))["task"] == "single"


def test_iterative_folds_keep_patients_whole_and_spread_each_finding():
    rng = np.random.default_rng(0)
    n_patients, k = 120, 4
    groups = np.repeat([f"p{i}" for i in range(n_patients)], 2)
    findings = ["a", "b", "c"]
    rows = [
        lab.canonical([f for f, p in zip(findings, (0.5, 0.2, 0.05)) if rng.random() < p]) for _ in groups
    ]
    fold = lab.iterative_folds(rows, groups, k, seed=1)
    assert pd.Series(fold).groupby(groups).nunique().max() == 1  # no patient in two folds
    y = lab.target_matrix(rows, findings) == 1
    for i in range(len(findings)):
        per_fold = np.array([y[fold == j, i].sum() for j in range(k)])
        assert per_fold.max() - per_fold.min() <= 4, (findings[i], per_fold)
    sizes = np.bincount(fold, minlength=k)
    assert sizes.max() - sizes.min() <= 8


# ---------------------------------------------------------------- heads and losses


def test_corn_probabilities_are_grade_probabilities_and_the_grade_is_rank_consistent():
    logits = torch.tensor([[4.0, 4.0, -4.0, -4.0], [-4.0, 0.0, 0.0, 0.0]])
    p = heads.corn_probs(logits)
    assert torch.allclose(p.sum(1), torch.ones(2), atol=1e-6) and (p >= 0).all()
    assert heads.predicted_grade(p.numpy()).tolist() == [2, 0]
    assert heads.expected_grade(np.eye(3)).tolist() == [0.0, 1.0, 2.0]
    assert heads.n_outputs("ordinal", 5) == 4 and heads.n_outputs("multilabel", 5) == 5


def test_corn_loss_prefers_the_right_grade_and_masked_bce_ignores_uncertain_cells():
    from core.train.losses import CornLoss, MaskedBCE

    y = torch.tensor([0, 1, 2, 2])
    right = torch.tensor([[-5.0, -5.0], [5.0, -5.0], [5.0, 5.0], [5.0, 5.0]])
    assert CornLoss()(right, y) < CornLoss()(-right, y)
    target = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    a, b = torch.tensor([[3.0, 9.0], [-3.0, 3.0]]), torch.tensor([[3.0, -9.0], [-3.0, 3.0]])
    assert torch.isclose(MaskedBCE()(a, target), MaskedBCE()(b, target))  # the uncertain cell does not count
    assert MaskedBCE(torch.tensor([5.0, 1.0]))(-a, target) > MaskedBCE()(
        -a, target
    )  # weighted missed positives


# ---------------------------------------------------------------- metrics on planted predictions


def _ordinal_frame(y: np.ndarray, shift: int, groups=None) -> pd.DataFrame:
    probs = np.eye(5)[np.clip(y + shift, 0, 4)] * 0.9 + 0.02
    grades = [f"KL{i}" for i in range(5)]
    return ordinal.predictions_frame(
        [f"x{i}" for i in range(len(y))],
        probs,
        grades,
        label=[grades[i] for i in y],
        **({"group": groups} if groups is not None else {}),
    )


def test_ordinal_metrics_of_planted_grades():
    y = np.repeat(np.arange(5), 8)
    ev = ordinal.evaluate_frame(_ordinal_frame(y, 0), [f"KL{i}" for i in range(5)], n_resamples=50)
    assert ev["metrics"]["qwk"] == pytest.approx(1.0) and ev["metrics"]["mae"] == 0
    assert ev["cut_points"][1]["cut"] == ">= KL2" and ev["cut_points"][1]["roc_auc"][
        "value"
    ] == pytest.approx(1.0)
    off = ordinal.evaluate_frame(_ordinal_frame(y, 1), [f"KL{i}" for i in range(5)], n_resamples=50)
    assert off["metrics"]["off_by_one_accuracy"] == 1.0 and off["metrics"]["accuracy"] == pytest.approx(0.2)
    assert off["metrics"]["mae"] == pytest.approx(0.8)
    assert np.diag(np.array(off["confusion"]))[:4].sum() == 0  # everyone one grade above (the top stays)


def test_qwk_is_cohens_quadratic_kappa():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert ordinal.qwk(y, p, 5) == pytest.approx(cohen_kappa_score(y, p, weights="quadratic"))


def test_multilabel_metrics_of_planted_findings_and_uncertain_cells_left_out():
    labels = ["a", "a|b", "b", lab.EMPTY, "a|?b", lab.EMPTY] * 5
    y = lab.target_matrix(labels, ["a", "b"])
    probs = np.where(y == 1, 0.9, 0.1)
    probs[:, 1] = 1 - probs[:, 1]  # finding b ranked backwards
    df = multilabel.predictions_frame([f"x{i}" for i in range(len(labels))], probs, ["a", "b"], label=labels)
    ev = multilabel.evaluate_frame(df, ["a", "b"], n_resamples=50)
    assert ev["metrics"]["roc_auc_a"] == 1.0 and ev["metrics"]["roc_auc_b"] == 0.0
    assert ev["metrics"]["macro_roc_auc"] == pytest.approx(0.5)
    row_b = next(r for r in ev["per_finding"] if r["finding"] == "b")
    assert row_b["uncertain"] == 5 and row_b["positives"] + row_b["negatives"] == 25
    thresholds = multilabel.choose_thresholds(df, ["a", "b"])
    assert 0.1 < thresholds["a"] <= 0.9


def test_patient_level_bootstrap_resamples_whole_patients():
    groups = np.array(["p1", "p1", "p1", "p2", "p3", "p3"])
    for idx in taskstats.resamples(6, groups, 20, seed=0):
        counts = pd.Series(groups[idx]).value_counts()
        assert all(counts[g] % (groups == g).sum() == 0 for g in counts.index)
    y = np.repeat(np.arange(5), 8)
    frame = _ordinal_frame(y, 0, groups=[f"p{i // 4}" for i in range(len(y))])
    ev = ordinal.evaluate_frame(frame, [f"KL{i}" for i in range(5)], n_resamples=20)
    assert ev["bootstrap"]["method"].endswith("patients resampled with replacement")


# ---------------------------------------------------------------- end to end on the synthetic samples


def _config(source: SourceConfig, task: str, **split) -> RunConfig:
    cfg = RunConfig(source=source)
    cfg.train.pretrained, cfg.train.epochs, cfg.train.arch = False, 1, "resnet18"
    cfg.data.img_size, cfg.data.batch_size, cfg.data.task.type = 32, 16, task
    cfg.data.split.method, cfg.data.split.test_pct = "group", 0.2
    for k, v in split.items():
        setattr(cfg.data.split, k, v)
    return cfg.validate()


def _train(cfg: RunConfig, run_dir):
    from core.runs.progress import Progress
    from core.train.run import train_run

    return train_run(cfg, run_dir, Progress(run_dir))


def test_multilabel_from_finding_columns_end_to_end(tmp_path):
    from core.evaluation.predict import Predictor

    root = sample_tasks.ensure_multilabel_sample(tmp_path / "ml", n=60, size=32)
    src = SourceConfig(
        kind="csv",
        csv_path=str(root / sample_tasks.FINDING_COLUMNS_CSV),
        group_col="patient_id",
        finding_cols=list(sample_tasks.FINDINGS),
    )
    summary = _train(_config(src, "multilabel"), tmp_path / "run")
    assert summary["classes"] == list(sample_tasks.FINDINGS) and summary["task"]["type"] == "multilabel"
    manifest = json.loads((tmp_path / "run/model/model.json").read_text())
    assert manifest["task"]["thresholds"].keys() == set(sample_tasks.FINDINGS)
    valid = pd.read_csv(tmp_path / "run/valid_predictions.csv", keep_default_na=False)
    assert "?" in "".join(valid["label"]) or "?" in "".join(pd.read_csv(tmp_path / "run/items.csv")["label"])
    pred = Predictor(tmp_path / "run")
    again, _ = pred.predict_paths(valid["path"].tolist())
    cols = [f"prob_{f}" for f in sample_tasks.FINDINGS]
    np.testing.assert_allclose(again[cols].to_numpy(), valid[cols].to_numpy(), atol=1e-4)
    t = manifest["task"]["thresholds"]
    for (
        f
    ) in sample_tasks.FINDINGS:  # decided at the same per-finding thresholds (cells at the threshold aside)
        clear = (valid[f"prob_{f}"] - t[f]).abs() > 1e-4
        assert (again.loc[clear, f"pred_{f}"] == valid.loc[clear, f"pred_{f}"]).all()
    ev = bytask.evaluate_run(tmp_path / "run", n_resamples=20)
    assert ev["task"] == "multilabel" and {"valid", "test"} <= set(ev["sets"])
    assert "macro_roc_auc" in ev["sets"]["test"]["ci"]


def test_ordinal_kfold_end_to_end(tmp_path):
    root = sample_tasks.ensure_ordinal_sample(tmp_path / "od", n=50, size=32)
    src = SourceConfig(
        kind="csv", csv_path=str(root / sample_tasks.GRADES_CSV), label_col="grade", group_col="patient_id"
    )
    summary = _train(_config(src, "ordinal", k_folds=2, test_pct=0.0), tmp_path / "run")
    assert summary["classes"] == list(sample_tasks.GRADES) and summary["task"]["head"] == "corn"
    assert {"qwk", "mae", "off_by_one_accuracy"} <= set(summary["metrics"]["pooled_oof"])
    fold_manifest = json.loads((tmp_path / "run/folds/fold0/model.json").read_text())
    assert fold_manifest["task"]["order"] == list(sample_tasks.GRADES)
    items = pd.read_csv(tmp_path / "run/items.csv")
    assert items.groupby("group")["fold"].nunique().max() == 1
    ev = bytask.evaluate_run(tmp_path / "run", n_resamples=20)
    assert ev["sets"]["oof"]["n"] == 50 and len(ev["sets"]["oof"]["cut_points"]) == 4
    fold_model = str(tmp_path / "run/folds/fold0")
    assert (
        main(["predict", "--model", fold_model, str(root / "images"), "--out", str(tmp_path / "p.csv")]) == 0
    )
    out = pd.read_csv(tmp_path / "p.csv")
    assert len(out) == 50 and set(out["pred"]) <= set(sample_tasks.GRADES) and "expected_grade" in out
    assert (
        main(
            ["evaluate", "--model", fold_model, "--csv", src.csv_path, "--label-col", "grade", "--no-report"]
        )
        == 0
    )


def test_the_report_of_a_task_run(tmp_path):
    from core.evaluation.report import build_report

    root = sample_tasks.ensure_multilabel_sample(tmp_path / "ml", n=40, size=32)
    src = SourceConfig(
        kind="csv",
        csv_path=str(root / sample_tasks.FINDINGS_CSV),
        label_col="Finding Labels",
        label_delimiter="|",
        group_col="patient_id",
    )
    _train(_config(src, "multilabel", test_pct=0.0), tmp_path / "run")
    rep = build_report(tmp_path / "run", n_resamples=20)
    page = open(rep["report"], encoding="utf-8").read()
    assert "Macro ROC AUC" in page and "nodule" in page and page.count("plotly.js v") <= 1
    assert "macro_roc_auc" in rep["headline"]["valid"]


def test_onnx_metadata_names_the_task():
    from core.models.onnx_export import onnx_metadata
    from core.models.savedmodel import Manifest

    m = Manifest(
        arch="resnet18", classes=["a", "b"], task={"type": "multilabel", "thresholds": {"a": 0.3, "b": 0.6}}
    )
    meta = {k: json.loads(v) for k, v in onnx_metadata(m).items()}
    assert (
        meta["task"] == "multilabel"
        and meta["thresholds"] == {"a": 0.3, "b": 0.6}
        and meta["threshold"] is None
    )
    grades = Manifest(
        arch="resnet18", classes=["0", "1", "2"], task={"type": "ordinal", "order": ["0", "1", "2"]}
    )
    assert "CORN" in json.loads(onnx_metadata(grades)["output"])


def test_single_label_records_stay_as_they_were():
    from core.models.savedmodel import Manifest

    assert "task" not in Manifest(arch="resnet18", classes=["a", "b"]).to_dict()
    assert Manifest.from_dict({"arch": "resnet18", "classes": ["a", "b"]}).task_type == "single"
    assert bytask.task_of({"type": "single", "classes": ["a", "b"]}) == "single"
    assert RunConfig().data.task.type == "single"


def test_cli_flags_reach_the_config(tmp_path):
    from core.cli import build_parser, run_config

    ns = build_parser().parse_args(
        [
            "train",
            "--csv",
            str(tmp_path / "t.csv"),
            "--task",
            "ordinal",
            "--grade-order",
            "none,mild,severe",
            "--label-delimiter",
            ";",
            "--uncertain",
            "positive",
            "--pos-weight",
        ]
    )
    cfg = run_config(ns)
    assert cfg.data.task.type == "ordinal" and cfg.data.task.order == ["none", "mild", "severe"]
    assert (
        cfg.source.label_delimiter == ";" and cfg.source.uncertain == "positive" and cfg.data.task.pos_weight
    )


def test_the_lr_finder_runs_for_a_multilabel_source(tmp_path):
    from core.runs.progress import Progress
    from core.train.lr_find import lr_find_run

    root = sample_tasks.ensure_multilabel_sample(tmp_path / "ml", n=30, size=32)
    src = SourceConfig(
        kind="csv",
        csv_path=str(root / sample_tasks.FINDINGS_CSV),
        label_col="Finding Labels",
        label_delimiter="|",
    )
    cfg = _config(src, "multilabel", method="stratified", test_pct=0.0)
    out = lr_find_run(cfg, tmp_path / "lr", Progress(tmp_path / "lr"), num_it=5)
    assert out["points"] > 0 and (tmp_path / "lr" / "lr_find.json").is_file()


def test_a_task_run_is_not_finished_from_a_checkpoint_yet(tmp_path):
    from core.base.config import to_dict
    from core.train.finish import why_not_finishable

    cfg = RunConfig()
    cfg.data.task.type = "ordinal"
    (tmp_path / "config.json").write_text(json.dumps(to_dict(cfg)))
    (tmp_path / "items.csv").write_text("relpath,label,split,kind,group\n")
    assert "ordinal runs are not finished from checkpoints" in why_not_finishable(tmp_path)
