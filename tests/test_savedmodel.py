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
        f"torch.set_num_threads({torch.get_num_threads()});"  # this process's threads: the same sums
        "m, man = savedmodel.load_model(sys.argv[1]); x = load_file(sys.argv[2])['x'];"
        "assert not m.training and man.arch == 'efficientnet_b0';"
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
    # the same weights give the same outputs; a tolerance, because summation order may differ between processes
    torch.testing.assert_close(
        load_file(str(tmp_path / "y.safetensors"))["y"], expected, rtol=1e-5, atol=1e-6
    )


def test_tampered_weights_refused(tmp_path):
    model = archs.create_model("resnet18", 2)
    path = savedmodel.save_model(model, tmp_path, MANIFEST)
    loaded, manifest = savedmodel.load_model(tmp_path)
    assert manifest.img_size == 32 and not loaded.training
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


# A manifest as the code before `Manifest` wrote it (train.outputs.manifest_for + save_model), field for field.
OLD_MANIFEST = {
    "arch": "resnet18",
    "classes": ["0", "01"],
    "n_in": 1,
    "img_size": 32,
    "channels": "grey",
    "resize": "pad",
    "normalize": {"mean": [0.3], "std": [0.2]},
    "window": {"center": 40.0, "width": 400.0, "mode": "fixed"},
    "frame": 2,
    "train_config": {"arch": "resnet18", "epochs": 1},
    "metrics": {"valid": {"accuracy": 0.5}},
    "best_epoch": 0,
    "model_epoch": 0,
    "model_weights": "last",
    "format": "xray-trainer-model",
    "manifest_version": 1,
    "weights": "model.safetensors",
    "software": {"torch": "2.0"},
}


def test_a_manifest_written_by_earlier_versions_loads_typed(tmp_path):
    from core.base.config import Window
    from core.evaluation.predict import Predictor

    model = archs.create_model("resnet18", 2, 1).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    old = {**OLD_MANIFEST, "sha256": savedmodel.sha256_file(tmp_path / "model.safetensors"), "note": "kept"}
    (tmp_path / "model.json").write_text(json.dumps(old))
    loaded, man = savedmodel.load_model(tmp_path)
    assert isinstance(man, savedmodel.Manifest) and not loaded.training
    assert (man.arch, man.classes, man.n_in, man.img_size, man.channels, man.resize) == (
        "resnet18",
        ["0", "01"],
        1,
        32,
        "grey",
        "pad",
    )
    assert man.stats == ([0.3], [0.2]) and man.window == Window(40.0, 400.0, "fixed") and man.frame == 2
    assert (man.model_epoch, man.model_weights, man.metrics["valid"]["accuracy"]) == (0, "last", 0.5)
    assert man.extra == {"note": "kept"} and man.to_dict() == old  # the JSON on disk, unchanged
    pred = Predictor(tmp_path, device="cpu")
    assert pred.classes == ["0", "01"] and pred.reader.channels == "grey" and pred.reader.window == man.window


def test_manifest_round_trip_and_missing_keys(tmp_path):
    man = savedmodel.Manifest(
        arch="resnet18", classes=["a", "b"], img_size=32, mean=[0.5] * 3, std=[0.25] * 3
    )
    path = savedmodel.save_model(archs.create_model("resnet18", 2), tmp_path, man)
    on_disk = json.loads(path.read_text())
    assert on_disk["normalize"] == {"mean": [0.5] * 3, "std": [0.25] * 3} and on_disk["window"] is None
    assert set(on_disk) == set(OLD_MANIFEST) | {"sha256"}
    back, weights = savedmodel.read_manifest(tmp_path)
    assert back == savedmodel.Manifest.from_dict(on_disk) and weights == tmp_path / "model.safetensors"
    assert back.to_dict() == on_disk and len(back.sha256) == 64 and back.software
    bare = savedmodel.Manifest.from_dict({"arch": "resnet18", "classes": ["a", "b"]})
    assert (bare.n_in, bare.img_size, bare.channels, bare.resize, bare.frame) == (3, 224, "rgb", "squish", 0)
    assert bare.stats is None and bare.window is None and bare.model_epoch is None and bare.extra == {}
