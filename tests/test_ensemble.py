"""A k-fold run used as one model: its probabilities are the mean of the fold models' (each with its temperature)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.evaluation.conformal import SetRule
from core.models import archs, temperature
from core.models.savedmodel import Manifest, save_model
from core.models.weightfiles import ModelFileError


@pytest.fixture
def kfold_run(tmp_path):
    """A finished k-fold run folder with 2 fold models (random resnet18s, 32 px, each its own temperature and
    normalisation, as from-scratch folds measure it on their own training images)."""
    run = tmp_path / "run"
    for i in range(2):
        torch.manual_seed(i)
        t = temperature.Temperature(1.0 + i, "oof", 50, 0.7, 0.6)
        manifest = temperature.with_temperature(
            Manifest(
                arch="resnet18", classes=["a", "b"], img_size=32, mean=[0.4 + 0.1 * i] * 3, std=[0.25] * 3
            ),
            t,
        )
        save_model(archs.create_model("resnet18", 2).eval(), run / "folds" / f"fold{i}", manifest)
    (run / "metrics.json").write_text(json.dumps({"type": "kfold", "k": 2, "classes": ["a", "b"]}))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(images / f"x{i}.png")
    return run, images


def test_ensemble_probabilities_are_the_mean_of_the_folds(kfold_run):
    from core.evaluation.ensemble import EnsemblePredictor
    from core.evaluation.predict import Predictor, predict_folder

    run, images = kfold_run
    ens = EnsemblePredictor(run, device="cpu")
    assert ens.n_members == 2
    got, problems = predict_folder(ens, images)
    assert problems.empty and len(got) == 4
    cols = ["prob_a", "prob_b"]
    folds = [predict_folder(Predictor(run / "folds" / f"fold{i}", device="cpu"), images)[0] for i in range(2)]
    np.testing.assert_allclose(got[cols], np.mean([f[cols].to_numpy() for f in folds], axis=0), atol=1e-6)
    assert not np.allclose(folds[0][cols], folds[1][cols])  # the members differ, so the mean means something
    tta = predict_folder(ens, images, tta=True)[0]
    tta_folds = [
        predict_folder(Predictor(run / "folds" / f"fold{i}", device="cpu"), images, tta=True)[0]
        for i in range(2)
    ]
    np.testing.assert_allclose(tta[cols], np.mean([f[cols].to_numpy() for f in tta_folds], axis=0), atol=1e-6)
    with pytest.raises(ValueError, match="single models"):
        ens.use_sets(SetRule(0.9))


def test_an_ensemble_needs_fold_models_and_the_cli_uses_it(kfold_run, tmp_path, capsys):
    from core.cli import main
    from core.evaluation.ensemble import EnsemblePredictor

    run, images = kfold_run
    with pytest.raises(ModelFileError, match="fold model"):
        EnsemblePredictor(tmp_path / "images")
    assert main(["predict", "--model", str(run), str(images), "--ensemble", "--show", "4"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    single = main(["predict", "--model", str(run / "folds" / "fold0"), str(images), "--show", "4"])
    first = json.loads(capsys.readouterr().out)["rows"]
    assert single == 0 and len(rows) == 4 and rows[0]["prob_a"] != first[0]["prob_a"]


def test_the_model_zip_carries_an_onnx_ensemble_that_gives_the_ensembles_probabilities(kfold_run, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from core.evaluation.ensemble import EnsemblePredictor
    from core.models import package
    from core.runs.rundir import RunFolder

    run, _ = kfold_run
    files: dict = {}  # what package_model adds to the zip beside model.onnx (tested in test_package)
    assert package._ensemble_onnx(RunFolder(run), files, tmp_path, None) == 2
    folder = tmp_path
    assert set(files) == {package.ENSEMBLE_ONNX_FILE} and "k times slower" in package.ENSEMBLE_README
    sess = ort.InferenceSession(str(folder / "ensemble.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["ensemble"])["members"] == 2 and json.loads(meta["temperature"]) == 1.0
    mean, std = json.loads(meta["mean"]), json.loads(meta["std"])  # the input as the metadata describes it
    x01 = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    x = (x01 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    logits = sess.run(None, {"image": x.numpy()})[0]
    got = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(got, EnsemblePredictor(run, device="cpu").probs(x01), atol=1e-4)


def test_a_kfold_run_scores_its_test_split_with_the_final_model_and_the_ensemble(tmp_path):
    import pandas as pd

    from core.base.config import DataConfig, RunConfig, SourceConfig, SplitConfig, TrainConfig, to_dict
    from core.data.sample import ensure_sample
    from core.evaluation import evaluate
    from core.evaluation.ensemble import EnsemblePredictor
    from core.evaluation.predict import Predictor
    from core.runs import jobs

    sample = ensure_sample(tmp_path / "sample", n_patients=8)
    cfg = RunConfig(
        source=SourceConfig(kind="csv", csv_path=str(sample / "labels.csv"), group_col="patient_id"),
        data=DataConfig(
            img_size=32, batch_size=32, split=SplitConfig(method="group", k_folds=2, test_pct=0.25)
        ),
        train=TrainConfig(
            pretrained=False, epochs=1, freeze_epochs=0, torch_threads=1, final_model_on_all=True
        ),
    )
    run = tmp_path / "kf"
    jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=run)
    summary = evaluate.run_summary(run)
    classes = list(summary["classes"])
    cols = [f"prob_{c}" for c in classes]
    items = pd.read_csv(run / "items.csv")
    test = pd.read_csv(run / "test_predictions.csv")
    assert summary["test_model"] == "final model" and len(test) == int((items["split"] == "test").sum()) > 0
    paths, labels = test["path"].tolist(), test["label"].astype(str).tolist()
    final = Predictor(run / "model").predict_paths(paths)[0]
    np.testing.assert_allclose(test[cols], final[cols], atol=1e-5)  # the headline is the final model's
    ens = EnsemblePredictor(run).predict_paths(paths, labels=labels)[0]
    expected = evaluate.metrics_from_frame(ens, classes)
    assert summary["metrics"]["test_ensemble"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert summary["metrics"]["test"]["accuracy"] == pytest.approx(
        evaluate.metrics_from_frame(test, classes)["accuracy"]
    )
    from core.evaluation import checklist

    selection = checklist._selection_items(summary)[
        0
    ].value  # the checklist says which model scored the test set
    assert "scored by the final model" in selection and "fold ensemble (2 models averaged)" in selection
