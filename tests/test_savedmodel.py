"""The saved-model format: weights + manifest written atomically, rebuilt in a fresh process, checked when read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from core.models import archs, savedmodel
from core.models.weightfiles import ModelFileError

REPO = Path(__file__).resolve().parents[1]
MANIFEST = {
    "arch": "resnet18",
    "classes": ["normal", "pneumonia"],
    "n_in": 3,
    "img_size": 32,
    "channels": "rgb",
    "resize": "squish",
    "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "window": None,
    "frame": 0,
    "train": {"arch": "resnet18", "epochs": 1},
    "metrics": {"accuracy": 0.5},
}


@pytest.mark.slow
def test_save_load_round_trip_in_fresh_process(tmp_path):
    model = archs.create_model("efficientnet_b0", 2).eval()
    manifest_path = savedmodel.save_model(model, tmp_path / "run", {**MANIFEST, "arch": "efficientnet_b0"})
    saved = json.loads(manifest_path.read_text())
    assert saved["format"] == "xray-trainer-model" and saved["manifest_version"] == 1
    assert saved["weights"] == "model.safetensors" and len(saved["sha256"]) == 64
    assert saved["classes"] == ["normal", "pneumonia"]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temp files left
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    code = (
        "import sys; from safetensors.torch import load_file, save_file; import torch; from core.models import savedmodel;"
        "m, man = savedmodel.load_model(sys.argv[1]); x = load_file(sys.argv[2])['x'];"
        "assert not m.training and man['arch'] == 'efficientnet_b0';"
        "out = m(x).detach(); save_file({'y': out}, sys.argv[3])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(tmp_path / "run"),
            str(tmp_path / "x.safetensors"),
            str(tmp_path / "y.safetensors"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.equal(load_file(str(tmp_path / "y.safetensors"))["y"], expected)


def test_tampered_weights_refused(tmp_path):
    model = archs.create_model("resnet18", 2)
    path = savedmodel.save_model(model, tmp_path, MANIFEST)
    loaded, manifest = savedmodel.load_model(tmp_path)
    assert manifest["img_size"] == 32 and not loaded.training
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match its manifest"):
        savedmodel.load_model(path)
    bad = json.loads(path.read_text())
    bad["weights"] = "../../etc/passwd"
    path.write_text(json.dumps(bad))
    with pytest.raises(ModelFileError, match="beside the manifest"):
        savedmodel.load_model(path)
    path.write_text("{not json")
    with pytest.raises(ModelFileError, match="not a valid JSON"):
        savedmodel.load_model(path)


@pytest.mark.slow
def test_a_run_folder_is_accepted_wherever_a_model_is_asked_for(tmp_path, capsys):
    from core.cli import main
    from core.evaluation.predict import Predictor

    model = archs.create_model("resnet18", 2).eval()
    run = tmp_path / "run"
    (run / "config.json").parent.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    savedmodel.save_model(model, run / "model", MANIFEST)
    assert (
        savedmodel.find_manifest(run)
        == run / "model" / "model.json"
        == savedmodel.find_manifest(run / "model")
    )
    assert Predictor(run, device="cpu").classes == MANIFEST["classes"]
    img = tmp_path / "x.png"
    Image.new("RGB", (40, 36), 90).save(img)
    assert main(["predict", "--model", str(run), str(img)]) == 0
    assert json.loads(capsys.readouterr().out)["predicted"] == 1
    kfold = tmp_path / "kfold"
    for i in range(2):
        savedmodel.save_model(model, kfold / "folds" / f"fold{i}", MANIFEST)
    with pytest.raises(ModelFileError, match=r"k-fold run without a final model.*folds/fold0, folds/fold1"):
        Predictor(kfold)
    savedmodel.save_model(model, kfold / "model", MANIFEST)
    assert savedmodel.find_manifest(kfold) == kfold / "model" / "model.json"


def test_model_errors_name_the_right_path(tmp_path, capsys):
    from core.cli import main

    failed = tmp_path / "failed_run"
    (failed / "checkpoints").mkdir(parents=True)
    (failed / "config.json").write_text("{}")
    save_file({"w": torch.zeros(1)}, str(failed / "checkpoints" / "best.safetensors"))
    with pytest.raises(
        ModelFileError, match="model.json is missing: it did not finish.*python -m core finish"
    ):
        savedmodel.load_model(failed)
    assert main(["export", "--model", str(failed), "--onnx", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert str(failed / "model" / "model.json") in err and f"{failed}/model.json" not in err
    weights = tmp_path / "resnet18-imagenet.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    for call in (lambda: savedmodel.load_model(weights), lambda: savedmodel.read_manifest(weights)):
        with pytest.raises(ModelFileError, match=r"weights file, not a model saved by this app.*--weights"):
            call()
    with pytest.raises(ModelFileError, match="no model in"):
        savedmodel.load_model(tmp_path / "failed_run" / "checkpoints")
    assert main(["predict", "--model", str(tmp_path / "nowhere"), str(weights)]) == 1
    assert "no model at" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [{"patient_name": "DOE^JANE"}, {"train": {"PatientID": "123"}}, {"metrics": [{"Birth Date": "1970"}]}],
)
def test_manifest_with_phi_keys_refused(tmp_path, extra):
    model = archs.create_model("resnet18", 2)
    with pytest.raises(ValueError, match="patient-identifying"):
        savedmodel.save_model(model, tmp_path, {**MANIFEST, **extra})
    assert not (tmp_path / "model.json").exists()
