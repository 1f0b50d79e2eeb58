"""Temperature scaling: fitted on held-out predictions, kept in the saved model, applied by Predict, ONNX export and
evaluation; ECE / Brier before and after with bootstrap CIs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from core.base.config import RunConfig, to_dict
from core.evaluation import calibration, evaluate
from core.models import temperature
from core.models.savedmodel import Manifest, read_manifest, save_model


def planted(n: int, sharpen: float, seed: int, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) and a model that reports softmax(sharpen * z): over-confident when > 1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, n_classes))
    true_p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(n_classes, p=p) for p in true_p])
    reported = np.exp(sharpen * z) / np.exp(sharpen * z).sum(1, keepdims=True)
    return y, reported


def tiny_net() -> torch.nn.Module:
    """A two-class network small enough to save and export in a moment."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()


def test_temperature_lowers_ece_of_an_over_confident_model():
    y_fit, p_fit = planted(2000, 3.0, seed=1)
    t = temperature.fit_temperature(y_fit, p_fit, "valid")
    assert t is not None and 2.6 < t.temperature < 3.4  # the planted sharpening is found
    assert t.nll_after < t.nll_before and t.fitted_on == "valid" and t.n == 2000
    y, p = planted(3000, 3.0, seed=2)  # a fresh "test set"
    out = calibration.before_after(y, p, t.temperature, n_resamples=200)
    ece, brier = out["ece"], out["brier"]
    assert ece["before"]["value"] > 0.10 and ece["after"]["value"] < 0.03
    assert ece["change"]["hi"] < 0 and brier["change"]["hi"] < 0  # the CI of the improvement excludes 0
    assert ece["before"]["lo"] <= ece["before"]["value"] <= ece["before"]["hi"]
    assert np.array_equal(temperature.scale_probs(p, t.temperature).argmax(1), p.argmax(1))  # decisions kept


def test_a_calibrated_model_keeps_a_temperature_near_one_and_too_few_items_fit_none():
    y, p = planted(3000, 1.0, seed=3)
    t = temperature.fit_temperature(y, p)
    assert t is not None and 0.85 < t.temperature < 1.15
    assert temperature.fit_temperature(y[:5], p[:5]) is None
    assert temperature.fit_temperature(np.zeros(100, int), p[:100]) is None  # one class only


def test_scaling_is_exactly_undone_by_one_over_t():
    _, p = planted(50, 2.0, seed=4)
    back = temperature.scale_probs(temperature.scale_probs(p, 2.5), 1 / 2.5)
    np.testing.assert_allclose(back, p, atol=1e-9)


def test_the_record_rides_in_the_manifest_as_json(tmp_path):
    t = temperature.Temperature(1.7, "oof", 120, 0.6, 0.5)
    m = temperature.with_temperature(Manifest(arch="resnet18", classes=["a", "b"], img_size=32), t)
    save_model(tiny_net(), tmp_path / "model", m)
    data = json.loads((tmp_path / "model" / "model.json").read_text())
    assert data["calibration"] == {**t.to_dict(), "method": "temperature", "task": "single"}
    loaded, _ = read_manifest(tmp_path / "model")
    assert temperature.of_manifest(loaded) == t and temperature.divisor(loaded) == 1.7
    temperature.stamp(tmp_path / "model", None)  # restamping keeps the weights' sha256 valid
    again, _ = read_manifest(tmp_path / "model")
    assert temperature.of_manifest(again) is None and again.sha256 == loaded.sha256
    with pytest.raises(ValueError, match="positive"):
        temperature.Temperature.from_dict({"method": "temperature", "temperature": -1})
    with pytest.raises(ValueError, match="unknown calibration"):
        temperature.Temperature.from_dict({"method": "matrix", "temperature": 1})


def test_scale_frame_rescales_probabilities_and_prob_pred():
    classes = ["a", "b", "c"]
    y, p = planted(40, 3.0, seed=5)
    df = evaluate.predictions_frame([f"x{i}.png" for i in range(40)], y, p, classes)
    out = calibration.scale_frame(df, classes, 2.0)
    probs = out[[f"prob_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs, temperature.scale_probs(p, 2.0))
    np.testing.assert_allclose(out["prob_pred"], probs.max(1))
    assert (out["pred"] == df["pred"]).all() and (out["label"] == df["label"]).all()


def test_onnx_export_divides_the_logits_by_the_temperature(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from core.models import onnx_export

    model = tiny_net()
    t = temperature.Temperature(2.0, "valid", 100, 0.7, 0.6)
    manifest = temperature.with_temperature(Manifest(arch="resnet18", classes=["a", "b"], img_size=32), t)
    result = onnx_export.export_onnx(model, manifest, tmp_path / "m.onnx")
    sess = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy() / 2.0
    np.testing.assert_allclose(sess.run(None, {"image": x})[0], expected, atol=1e-4)
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["temperature"]) == 2.0


def test_run_report_recovers_raw_probabilities_and_marks_the_fitting_set(tmp_path):
    classes = ["a", "b", "c"]
    run = tmp_path / "run"
    run.mkdir()
    yv, pv = planted(600, 3.0, seed=6)
    yt, pt = planted(600, 3.0, seed=7)
    t = temperature.fit_temperature(yv, pv, "valid")
    assert t is not None
    for name, y, p in (("valid", yv, pv), ("test", yt, pt)):
        df = evaluate.predictions_frame([f"{name}{i}.png" for i in range(len(y))], y, p, classes)
        calibration.scale_frame(df, classes, t.temperature).to_csv(
            run / f"{name}_predictions.csv", index=False
        )
    summary = {"type": "single", "classes": classes, "calibration": t.to_dict()}
    (run / "metrics.json").write_text(json.dumps(summary))
    rep = calibration.calibration_report(run, n_resamples=100)
    assert rep is not None and rep["temperature"]["temperature"] == pytest.approx(t.temperature)
    assert rep["sets"]["valid"]["fitted_here"] and not rep["sets"]["test"]["fitted_here"]
    test_ece = rep["sets"]["test"]["ece"]
    assert test_ece["before"]["value"] == pytest.approx(evaluate.expected_calibration_error(yt, pt), abs=1e-6)
    assert test_ece["after"]["value"] < test_ece["before"]["value"]
    table = calibration.report_table(rep)
    assert list(table.columns) == ["set", "n", "score", "before", "after", "change"] and len(table) == 4
    (run / "metrics.json").write_text(json.dumps({**summary, "calibration": None}))
    assert calibration.calibration_report(run) is None


def test_a_set_without_errors_fits_no_temperature_and_opting_out_leaves_tables_alone():
    from core.base.config import RunConfig, TrainConfig
    from core.train.calibrate import calibrate_sets

    y = np.repeat([0, 1], 50)
    p = np.where(np.eye(2)[y] == 1, 0.9, 0.1)  # every prediction right: NLL falls as T -> 0
    assert temperature.fit_temperature(y, p) is None
    classes = ["a", "b"]
    yy, pp = planted(200, 3.0, seed=8, n_classes=2)
    frames = {"valid": evaluate.predictions_frame(list(range(200)), yy, pp, classes)}
    off = RunConfig(train=TrainConfig(calibrate=False))
    same, t = calibrate_sets(off, frames, "valid", classes)
    assert t is None and same["valid"] is frames["valid"]
    scaled, t = calibrate_sets(RunConfig(), frames, "valid", classes)
    assert t is not None and t.temperature > 2
    assert scaled["valid"]["prob_b"].sub(0.5).abs().mean() < frames["valid"]["prob_b"].sub(0.5).abs().mean()


def tiny_run(tmp_path, monkeypatch):
    """A 1-epoch 32 px run whose temperature fit is replaced by a known T = 2 (the outcome cannot decide it)."""
    from core.base.config import DataConfig, SourceConfig, SplitConfig, TrainConfig
    from core.data.sample import ensure_sample
    from core.runs import jobs

    monkeypatch.setattr(calibration, "fit_on_frame", lambda df, classes, on: KNOWN)
    sample = ensure_sample(tmp_path / "sample", n_patients=8)
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(sample / "labels.csv"), group_col="patient_id"),
        data=DataConfig(img_size=32, batch_size=32, split=SplitConfig(method="group")),
        train=TrainConfig(pretrained=False, epochs=1, freeze_epochs=0, torch_threads=1),
    )
    run = tmp_path / "run"
    jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=run)
    return run


KNOWN = temperature.Temperature(2.0, "valid", 10, 0.7, 0.6)


@pytest.mark.slow
def test_training_keeps_temperature_and_set_scores_and_predict_applies_them(tmp_path, monkeypatch, capsys):
    """Plumbing, not the fit: the fit is replaced by a known temperature, so the training outcome cannot decide it."""
    from core.evaluation.predict import Predictor

    run = tiny_run(tmp_path, monkeypatch)
    check_prediction_sets(run, tmp_path, capsys)
    summary = json.loads((run / "metrics.json").read_text())
    manifest, _ = read_manifest(run / "model")
    assert summary["calibration"] == KNOWN.to_dict() and temperature.of_manifest(manifest) == KNOWN
    valid = pd.read_csv(run / "valid_predictions.csv").head(8)
    calibrated = Predictor(run / "model", device="cpu").predict_paths(valid["path"].tolist())[0]
    raw = Predictor(run / "model", device="cpu", calibrated=False).predict_paths(valid["path"].tolist())[0]
    cols = [f"prob_{c}" for c in manifest.classes]
    np.testing.assert_allclose(calibrated[cols], valid[cols], atol=1e-4)  # the run's tables are calibrated
    np.testing.assert_allclose(
        calibrated[cols], temperature.scale_probs(raw[cols].to_numpy(), 2.0), atol=1e-5
    )


def check_prediction_sets(run, tmp_path, capsys) -> None:
    """The trained model carries held-out conformal scores; Predict and the CLI add set / refer columns."""
    from core.cli import main
    from core.evaluation import conformal
    from core.evaluation.conformal import SetRule
    from core.evaluation.predict import Predictor

    pred = Predictor(run / "model", device="cpu")
    assert pred.conformal is not None and pred.conformal.fitted_on == "valid"
    valid = pd.read_csv(run / "valid_predictions.csv")
    pred.use_sets(SetRule(0.9))
    df, _ = pred.predict_paths(valid["path"].tolist(), labels=valid["label"].tolist())
    probs = df[[f"prob_{c}" for c in pred.classes]].to_numpy()
    expected = conformal.set_columns(conformal.prediction_sets(probs, pred.conformal, 0.9), pred.classes)
    assert df["set"].tolist() == expected[0] and (df["refer"] == expected[1]).all()
    with pytest.raises(ValueError, match="uncalibrated"):
        Predictor(run / "model", device="cpu", calibrated=False).use_sets(SetRule(0.9))
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "x.png").write_bytes(open(valid["path"].iloc[0], "rb").read())
    assert (
        main(["predict", "--model", str(run), str(folder), "--coverage", "0.95", "--set-score", "aps"]) == 0
    )
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert "set" in row and isinstance(row["refer"], bool)


def uncalibrated_kfold(root):
    """A finished 3-class k-fold run without models and without a temperature (planted over-confident OOF)."""
    from tests.test_app_eval_predict import fake_kfold_run

    run = fake_kfold_run(root)
    df = pd.read_csv(run / "oof_predictions.csv")
    cols = ["prob_a", "prob_b", "prob_c"]
    df = calibration.scale_frame(df, ["a", "b", "c"], 1 / 3)  # three times sharper than it should be
    df[cols] = df[cols].to_numpy()
    df.to_csv(run / "oof_predictions.csv", index=False)
    return run


def test_cli_calibrate_fits_refits_and_removes_the_temperature(tmp_path, capsys):
    from core.cli import main

    run = uncalibrated_kfold(tmp_path / "kf")
    raw = pd.read_csv(run / "oof_predictions.csv")
    assert main(["calibrate", str(run), "--n-boot", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    t = out["temperature"]["temperature"]
    assert t > 1.5 and out["temperature"]["fitted_on"] == "oof"  # the planted sharpening is undone
    assert json.loads((run / "metrics.json").read_text())["calibration"]["temperature"] == t
    assert {r["score"] for r in out["before_after"]} == {"ECE", "Brier"}
    assert main(["calibrate", str(run), "--n-boot", "50"]) == 0  # refitting starts from the raw probabilities
    again = json.loads(capsys.readouterr().out)["temperature"]["temperature"]
    assert again == pytest.approx(t, rel=1e-3)
    assert main(["calibrate", str(run), "--off"]) == 0
    assert json.loads(capsys.readouterr().out)["temperature"] is None
    assert "calibration" not in json.loads((run / "metrics.json").read_text())
    back = pd.read_csv(run / "oof_predictions.csv")
    np.testing.assert_allclose(
        back[["prob_a", "prob_b", "prob_c"]], raw[["prob_a", "prob_b", "prob_c"]], atol=1e-6
    )


@pytest.mark.slow
def test_evaluation_page_fits_a_temperature_and_shows_before_and_after(tmp_path):
    from tests.test_app_eval_predict import EVAL, app, register

    register(uncalibrated_kfold(tmp_path / "kf"), to_dict(RunConfig()))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    assert any("not calibrated" in c.value for c in at.caption)
    at.button(key="ev_calibrate").click().run()
    assert not at.exception, at.exception
    assert any(c.value.startswith("Temperature ") and "out-of-fold" in c.value for c in at.caption)
    table = next(d.value for d in at.dataframe if "change" in d.value)
    assert set(table["score"]) == {"ECE", "Brier"} and table["set"].iloc[0] == "oof (T fitted here)"


def test_report_has_the_calibration_section(tmp_path):
    from core.evaluation.report import build_report

    run = uncalibrated_kfold(tmp_path / "kf")
    from core.train.calibrate import calibrate_run

    t = calibrate_run(run)
    assert t is not None
    rep = build_report(run, tmp_path / "rep", n_resamples=50, png=False)
    assert rep["calibration"]["temperature"]["temperature"] == pytest.approx(t.temperature)
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Calibration (temperature scaling)" in page and "T fitted here" in page


@pytest.mark.slow
def test_kfold_fits_on_out_of_fold_and_every_model_of_the_run_carries_it(tmp_path, monkeypatch):
    from core.base.config import DataConfig, SourceConfig, SplitConfig, TrainConfig
    from core.data.sample import ensure_sample
    from core.evaluation import conformal
    from core.runs import jobs

    seen = []
    monkeypatch.setattr(
        calibration, "fit_on_frame", lambda df, classes, on: seen.append((on, len(df))) or KNOWN
    )
    sample = ensure_sample(tmp_path / "sample", n_patients=6)
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(sample / "labels.csv"), group_col="patient_id"),
        data=DataConfig(img_size=32, batch_size=32, split=SplitConfig(method="group", k_folds=2)),
        train=TrainConfig(
            pretrained=False, epochs=1, freeze_epochs=0, torch_threads=1, final_model_on_all=True
        ),
    )
    run = tmp_path / "kf"
    jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=run)
    oof = pd.read_csv(run / "oof_predictions.csv")
    assert seen == [("oof", len(oof))]  # one fit, on the pooled out-of-fold predictions
    assert json.loads((run / "metrics.json").read_text())["calibration"] == KNOWN.to_dict()
    for model_dir in (run / "folds" / "fold0", run / "folds" / "fold1", run / "model"):
        manifest, _ = read_manifest(model_dir)
        assert temperature.of_manifest(manifest) == KNOWN
        cal = conformal.of_manifest(manifest)
        assert cal is not None and cal.fitted_on == "oof" and cal.n == len(oof)
