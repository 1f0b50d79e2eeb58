"""The evaluation report: files, metrics with CIs, figures, side-by-side external test, k-fold, PNG status, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from core.evaluation import evaluate, report
from tests.test_predict import trained_run

pytestmark = pytest.mark.slow


def _strict_json(path: Path) -> dict:
    """Parse JSON refusing NaN / Infinity (which browsers and other tools reject)."""

    def refuse(token: str):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The shared tiny trained run."""
    return trained_run(tmp_path_factory.getbasetemp())


def test_report_of_a_run(run, tmp_path):
    out = report.build_report(run, tmp_path / "rep", n_resamples=200, png=False)
    page = Path(out["report"]).read_text()
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()[:300]) == 1  # plotly.js embedded once, figures follow without it
    assert page.count("Plotly.newPlot") >= 7
    figs = {Path(p).stem for p in out["figures"]}
    assert {
        "class_distribution",
        "training_curves",
        "valid_confusion",
        "valid_roc",
        "valid_pr",
        "valid_reliability",
        "valid_threshold",
    } <= figs
    folder = tmp_path / "rep" / "figures"
    assert (folder / "plotly.min.js").is_file() and all((folder / f"{f}.html").is_file() for f in figs)
    assert "plotly.min.js" in (folder / "valid_roc.html").read_text()
    data = _strict_json(Path(out["metrics"]))
    ci = data["sets"]["valid"]["ci"]
    for name in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        assert ci[name]["lo"] <= ci[name]["value"] <= ci[name]["hi"]
        assert f"{ci[name]['value']:.3f}" in page
    assert data["sets"]["valid"]["bootstrap"]["n_resamples"] == 200
    valid = pd.read_csv(run / "valid_predictions.csv")
    assert data["sets"]["valid"]["n"] == len(valid)
    assert out["headline"]["valid"]["roc_auc"]["value"] == pytest.approx(
        evaluate.roc_auc(
            (valid["label"] == "opacity").astype(int), valid[["prob_clear", "prob_opacity"]].to_numpy()
        )
    )
    assert "Top losses" in page and "data:image/jpeg;base64," in page
    assert out["png_ok"] is False and out["png_note"] == report.PNG_SKIPPED


def test_report_with_external_test_side_by_side(run, tmp_path):
    valid = pd.read_csv(run / "valid_predictions.csv")
    external = valid.sample(frac=0.8, random_state=0).reset_index(drop=True)
    out = report.build_report(
        run, tmp_path / "ext", test_predictions=external, threshold=0.4, n_resamples=100, png=False
    )
    table = pd.DataFrame(out["comparison"]).set_index("metric")
    assert list(table.columns) == ["valid", "external"]
    assert table.loc["roc_auc", "external"].startswith(
        f"{out['headline']['external']['roc_auc']['value']:.3f}"
    )
    data = _strict_json(Path(out["metrics"]))
    assert data["sets"]["external"]["n"] == len(external) and data["sets"]["external"]["threshold"] == 0.4
    assert "External test" in Path(out["report"]).read_text()


def _fake_kfold_run(root: Path) -> Path:
    """A finished 3-fold run folder (no training): predictions, history, LR finder, items, metrics.json."""
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    y = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3))
    logits[np.arange(150), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    evaluate.predictions_frame(
        [f"/nowhere/{i}.png" for i in range(150)], y, p, classes, fold=np.arange(150) % 3
    ).to_csv(root / "oof_predictions.csv", index=False)
    hist = pd.DataFrame(
        [
            {
                "fold": f,
                "epoch": e,
                "phase": "unfrozen",
                "train_loss": 1 - e / 5,
                "valid_loss": 1.1 - e / 6,
                "accuracy": 0.5 + e / 10,
                "time_s": e,
            }
            for f in range(3)
            for e in range(3)
        ]
    )
    hist.to_csv(root / "history.csv", index=False)
    (root / "lr_find.json").write_text(
        json.dumps(
            {
                "lrs": list(np.logspace(-6, 0, 20)),
                "losses": list(np.linspace(2, 1, 20)),
                "suggestions": {"valley": 1e-3, "slide": 1e-2},
            }
        )
    )
    pd.DataFrame(
        {
            "relpath": [f"{i}.png" for i in range(150)],
            "label": [classes[i] for i in y],
            "split": "train",
            "fold": np.arange(150) % 3,
        }
    ).to_csv(root / "items.csv", index=False)
    (root / "config.json").write_text("{}")
    (root / "metrics.json").write_text(
        json.dumps(
            {
                "type": "kfold",
                "k": 3,
                "classes": classes,
                "metrics": {"per_fold": [{"fold": f, "best_epoch": 2} for f in range(3)]},
            }
        )
    )
    return root


def test_kfold_report_has_folds_and_pooled_oof(tmp_path):
    run = _fake_kfold_run(tmp_path)
    out = report.build_report(run, n_resamples=100, png=False)
    assert Path(out["report"]).parent == run / "report"
    figs = {Path(p).stem for p in out["figures"]}
    assert {"fold_bars", "lr_finder", "training_curves", "oof_roc", "oof_confusion"} <= figs
    assert "valid_roc" not in figs and "oof_threshold" not in figs  # multi-class: no binary threshold plot
    data = _strict_json(Path(out["metrics"]))
    assert [r["fold"] for r in data["folds"]["table"]] == [0, 1, 2]
    assert set(data["folds"]["mean_sd"]["roc_auc"]) == {"mean", "sd"}
    assert {"roc_auc_a", "sensitivity_b", "specificity_c"} <= set(data["sets"]["oof"]["ci"])
    page = Path(out["report"]).read_text()
    assert "Per fold" in page and "mean +/- sd" in page and "(image unavailable)" in page


def test_png_status_is_reported(tmp_path, monkeypatch):
    run = _fake_kfold_run(tmp_path)
    monkeypatch.setattr(report, "png_support", lambda: (False, "PNG export needs the 'kaleido' package"))
    out = report.build_report(run, tmp_path / "a", n_resamples=20)
    assert out["png_ok"] is False and "kaleido" in out["png_note"] and out["png"] == []

    def broken(figs, paths):
        assert len(figs) == len(paths) and all(isinstance(f, go.Figure) for f in figs)
        raise RuntimeError("Chrome not found")

    monkeypatch.setattr(report, "png_support", lambda: (True, ""))
    monkeypatch.setattr(report, "write_pngs", broken)
    out = report.build_report(run, tmp_path / "b", n_resamples=20)
    assert out["png_ok"] is False and "Chrome not found" in out["png_note"] and len(out["figures"]) > 5
    assert "Chrome not found" in Path(out["report"]).read_text()


def test_cli_report_and_evaluate(run, tmp_path, capsys):
    from core.cli import main

    assert main(["report", str(run), "--out", str(tmp_path / "r"), "--n-boot", "100", "--no-png"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["report"]).is_file() and result["figures"] >= 7
    assert result["comparison"][0]["metric"] == "roc_auc"
    valid = pd.read_csv(run / "valid_predictions.csv")
    root = Path(valid["path"][0]).parents[2]
    csv = root / "external.csv"
    pd.DataFrame(
        {"path": [str(Path(p).relative_to(root)) for p in valid["path"]], "label": valid["label"]}
    ).to_csv(csv, index=False)
    code = main(
        [
            "evaluate",
            "--model",
            str(run / "model"),
            "--csv",
            str(csv),
            "--no-png",
            "--report-dir",
            str(tmp_path / "e"),
            "--out",
            str(tmp_path / "e.csv"),
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["n"] == len(valid) and Path(result["report"]).is_file()
    table = pd.DataFrame(result["comparison"]).set_index("metric")
    assert list(table.columns) == ["valid", "external"]
    assert table.loc["roc_auc", "valid"] == table.loc["roc_auc", "external"]  # same images, same model
    assert main(["report", str(tmp_path / "nothing")]) == 1
    capsys.readouterr()


def test_score_source_predicts_a_labelled_source_and_refuses_foreign_labels(run, tmp_path):
    from core.base.config import SourceConfig
    from core.evaluation.predict import score_source

    valid = pd.read_csv(run / "valid_predictions.csv")
    root = Path(valid["path"][0]).parents[2]
    rel = [str(Path(p).relative_to(root)) for p in valid["path"]]
    good, foreign = root / "scored.csv", root / "foreign.csv"
    pd.DataFrame({"path": rel, "label": valid["label"]}).to_csv(good, index=False)
    pd.DataFrame({"path": rel[:2], "label": ["not-a-class"] * 2}).to_csv(foreign, index=False)
    scored = score_source(run / "model", SourceConfig(kind="csv", csv_path=str(good)))
    assert len(scored.predictions) == len(valid) and scored.problems.empty
    assert scored.metrics["accuracy"] == pytest.approx(float((valid["label"] == valid["pred"]).mean()))
    with pytest.raises(ValueError, match="not classes of this model"):
        score_source(run / "model", SourceConfig(kind="csv", csv_path=str(foreign)))
