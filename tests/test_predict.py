"""Prediction with a saved model: matches validation, folders with broken files, CSVs, threshold, TTA, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.base.config import RunConfig, from_dict
from core.evaluation.predict import Predictor, predict_csv, predict_folder, read_path_table, score_predictions
from core.models import savedmodel

pytestmark = pytest.mark.slow


def trained_run(base: Path) -> Path:
    """A tiny finished run on the synthetic sample (trained once per test session, reused by other modules)."""
    from core.base.config import DataConfig, RunConfig, SourceConfig, SplitConfig, TrainConfig, to_dict
    from core.data.sample import ensure_sample
    from core.runs import jobs

    run = base / "eval_run"
    if (run / "metrics.json").is_file():
        return run
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:  # module-scoped callers run before the autouse XRT_HOME fixture
        mp.setenv("XRT_HOME", str(base / "home"))
        torch.set_num_threads(1)  # a 32-pixel model trains faster on one thread of a busy machine
        sample = ensure_sample(base / "sample", n_patients=20)
        cfg = RunConfig(
            source=SourceConfig(kind="csv", csv_path=str(sample / "labels.csv"), group_col="patient_id"),
            data=DataConfig(img_size=32, batch_size=32, split=SplitConfig(method="group")),
            train=TrainConfig(pretrained=False, epochs=2, freeze_epochs=0),
        )
        try:
            jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=run)
        finally:
            torch.set_num_threads(threads)
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The shared tiny trained run."""
    return trained_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def predictor(run) -> Predictor:
    """One loaded model for the whole module (prediction reuses it; no reload per call)."""
    return Predictor(run / "model", device="cpu")


def test_probabilities_match_validation(run, predictor):
    valid = pd.read_csv(run / "valid_predictions.csv")
    df, problems = predictor.predict_paths(valid["path"].tolist(), labels=valid["label"].tolist())
    assert problems.empty and df["path"].tolist() == valid["path"].tolist()
    for c in predictor.classes:
        np.testing.assert_allclose(df[f"prob_{c}"], valid[f"prob_{c}"], atol=1e-4)
    assert (df["pred"] == valid["pred"]).mean() > 0.95  # ties at exactly 0.5 aside
    assert df["label"].tolist() == valid["label"].tolist()
    assert list(df.columns[:4]) == ["path", "label", "pred", "prob_pred"] and (df["threshold"] == 0.5).all()


def test_channels_last_layout_gives_the_same_probabilities(run, predictor):
    import torch

    conv = next(
        m for m in predictor.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    paths = pd.read_csv(run / "valid_predictions.csv")["path"].tolist()[:16]
    default = Predictor(run / "model", device="cpu", channels_last=False)
    a, _ = predictor.predict_paths(paths)
    b, _ = default.predict_paths(paths)
    for c in predictor.classes:
        np.testing.assert_allclose(a[f"prob_{c}"], b[f"prob_{c}"], atol=1e-5)


def test_folder_with_broken_files_reports_them_and_predicts_the_rest(run, predictor, tmp_path):
    valid = pd.read_csv(run / "valid_predictions.csv").head(5)
    folder = tmp_path / "incoming"
    (folder / "sub").mkdir(parents=True)
    for i, p in enumerate(valid["path"]):
        shutil.copy(p, folder / ("sub" if i % 2 else "") / f"ok{i}.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "page.png").write_text("<html><body>not an image</body></html>")
    (folder / "truncated.png").write_bytes(Path(valid["path"][0]).read_bytes()[:100])
    (folder / "notes.txt").write_text("ignored: not an image extension")
    (folder / ".hidden.png").write_bytes(b"")
    df, problems = predict_folder(predictor, folder, batch_size=2)
    assert sorted(Path(p).name for p in df["path"]) == [f"ok{i}.png" for i in range(5)]
    assert sorted(Path(p).name for p in problems["path"]) == ["empty.png", "page.png", "truncated.png"]
    assert problems["reason"].str.len().gt(0).all()
    by_name = {Path(p).name: row for p, row in zip(df["path"], df.to_dict("records"))}
    for i, row in valid.reset_index().iterrows():
        assert by_name[f"ok{i}.png"]["prob_opacity"] == pytest.approx(row["prob_opacity"], abs=1e-4)


def test_csv_unlabelled_and_labelled(run, predictor, tmp_path):
    valid = pd.read_csv(run / "valid_predictions.csv")
    root = Path(valid["path"][0]).parents[2]  # sample root: folder/<class>/<file>
    rel = [str(Path(p).relative_to(root)) for p in valid["path"]]
    names = tmp_path / "names.csv"
    pd.DataFrame({"file": rel + ["folder/missing.png", "../../etc/passwd"]}).to_csv(names, index=False)
    df, problems = predict_csv(predictor, names, path_col="file", image_root=root)
    assert len(df) == len(valid) and "label" not in df
    assert score_predictions(df, predictor.classes) is None  # names only: predicted, not scored
    assert len(problems) == 2 and problems["reason"].str.contains("not found|escapes").all()
    labelled = root / "subset.csv"
    pd.DataFrame({"path": rel, "label": valid["label"]}).to_csv(labelled, index=False)
    df, problems = predict_csv(predictor, labelled)  # paths relative to the CSV's folder
    assert problems.empty and df["label"].tolist() == valid["label"].tolist()
    scored = score_predictions(df, predictor.classes, n_resamples=100)
    assert scored["n"] == len(valid)
    assert scored["metrics"]["roc_auc"] == pytest.approx(
        json.loads((run / "metrics.json").read_text())["metrics"]["valid"]["roc_auc"], abs=1e-3
    )
    files, labels, _ = read_path_table(labelled, label_col="")
    assert labels is None and len(files) == len(valid)


def test_threshold_column_and_decision(run, predictor):
    paths = pd.read_csv(run / "valid_predictions.csv")["path"].tolist()
    df, _ = predictor.predict_paths(paths, threshold=0.3)
    assert (df["threshold"] == 0.3).all()
    assert ((df["pred"] == "opacity") == (df["prob_opacity"] >= 0.3)).all()
    pos = df["pred"] == "opacity"
    assert np.allclose(df.loc[pos, "prob_pred"], df.loc[pos, "prob_opacity"])
    one = predictor.predict_one(paths[0], threshold=0.3)
    assert one["threshold"] == 0.3 and one["pred"] == df["pred"][0]
    assert sum(one["probs"].values()) == pytest.approx(1.0, abs=1e-5)


def test_tta_averages_the_views_the_training_allowed(run, predictor):
    from core.evaluation import tta

    flips = tta.allowed(from_dict(RunConfig, json.loads((run / "config.json").read_text())).data.aug)
    assert predictor.manifest.extra[tta.KEY] == flips  # the saved model records what TTA may flip
    assert [v.name for v in predictor.tta_views] == [v.name for v in tta.views(flips)]
    paths = pd.read_csv(run / "valid_predictions.csv")["path"].tolist()[:4]
    x = torch.stack([predictor.tensor_for(p) for p in paths])
    expected = np.mean([predictor.probs(tta.apply(x, v)) for v in predictor.tta_views], axis=0)
    df, _ = predictor.predict_paths(paths, tta=True)
    np.testing.assert_allclose(df[[f"prob_{c}" for c in predictor.classes]].to_numpy(), expected, atol=1e-5)


def test_single_prediction_reuses_the_loaded_model(run, monkeypatch):
    calls = []
    real = savedmodel.load_model
    monkeypatch.setattr(savedmodel, "load_model", lambda p: calls.append(p) or real(p))
    pred = Predictor(run / "model", device="cpu")
    path = pd.read_csv(run / "valid_predictions.csv")["path"][0]
    first, second = pred.predict_one(path), pred.predict_one(path)
    assert first == second and len(calls) == 1


def test_dicom_uses_the_training_decoder(run, predictor):
    dicom = Path(pd.read_csv(run / "valid_predictions.csv")["path"][0]).parents[2] / "dicom"
    df, problems = predict_folder(predictor, dicom)
    assert problems.empty and len(df) > 0 and df["path"].str.endswith(".dcm").all()
    np.testing.assert_allclose(df[[f"prob_{c}" for c in predictor.classes]].sum(1), 1.0, atol=1e-5)


def test_cli_predict_folder_and_labelled_csv(run, tmp_path, capsys):
    from core.cli import main

    valid = pd.read_csv(run / "valid_predictions.csv")
    folder = Path(valid["path"][0]).parent
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(run), str(folder), "--out", str(out), "--threshold", "0.4"]) == 0
    result = json.loads(capsys.readouterr().out)
    table = pd.read_csv(out)
    assert result["predicted"] == len(table) == len(list(folder.glob("*.png"))) and result["threshold"] == 0.4
    assert {"path", "pred", "prob_pred", "threshold"} <= set(table.columns) and result["scored"] is None
    root = folder.parents[1]
    csv = root / "cli_labelled.csv"
    pd.DataFrame(
        {"img": [str(Path(p).relative_to(root)) for p in valid["path"]], "label": valid["label"]}
    ).to_csv(csv, index=False)
    code = main(["predict", "--model", str(run / "model"), "--csv", str(csv), "--path-col", "img", "--tta"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["predicted"] == len(valid) and result["tta"] is True
    assert result["scored"]["n"] == len(valid) and 0 <= result["scored"]["ci"]["roc_auc"]["lo"] <= 1
    assert main(["predict", "--model", str(run)]) == 1  # nothing to predict: a clear error
