"""The model zip: its files, no PHI, refusals, and a fresh process that gets the run's probabilities back from both
the safetensors model and the ONNX file (onnxruntime + the README's own preprocessing code)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.models import package
from core.models.weightfiles import ModelFileError
from tests.test_predict import trained_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh process with the unpacked folder and the validation table: probabilities from the safetensors
# model (core.models.savedmodel.load_model through Predictor, and the README's create_model + load_state_dict) and
# from the ONNX file (onnxruntime + the
# python block of the zip's README, which reads its preprocessing from the ONNX metadata).
FRESH = """
import json, re, sys
from pathlib import Path
import numpy as np, pandas as pd, torch

folder, valid_csv = Path(sys.argv[1]), sys.argv[2]
valid = pd.read_csv(valid_csv)
paths = valid["path"].tolist()
from core.evaluation.predict import Predictor
pred = Predictor(folder, device="cpu")
pt = np.concatenate([pred.probs(torch.stack([pred.tensor_for(p) for p in paths[i:i + 32]]))
                     for i in range(0, len(paths), 32)])
from safetensors.torch import load_file
from core.models.archs import create_model
plain = create_model(pred.manifest.arch, len(pred.classes), pred.manifest.n_in)  # the README's PyTorch route
plain.load_state_dict(load_file(str(folder / "model.safetensors")))
with torch.no_grad():
    x = pred.normalized(torch.stack([pred.tensor_for(p) for p in paths]))
    T = json.loads((folder / "model.json").read_text()).get("calibration", {}).get("temperature", 1.0)  # README
    plain_probs = torch.softmax(plain.eval()(x) / T, dim=1).numpy()
code = re.findall(r"```python\\n(.*?)```", (folder / "README.md").read_text(), re.S)[-1]
ns = {"__name__": "readme"}
import os
os.chdir(folder)
exec(code, ns)
onnx = ns["predict"](paths)
print(json.dumps({"classes": pred.classes, "torch": pt.tolist(), "onnx": onnx.tolist(), "plain": plain_probs.tolist(),
                  "meta_classes": ns["meta"]["classes"]}))
"""


def fresh_routes(folder: Path, valid: Path) -> tuple[dict, np.ndarray]:
    """FRESH run in a new process on an unpacked model folder: its output, and the run's validation probabilities."""
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, str(folder), str(valid)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return got, pd.read_csv(valid)[[f"prob_{c}" for c in got["classes"]]].to_numpy()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The shared tiny trained run (tests/test_predict.py)."""
    return trained_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def zipped(run, tmp_path_factory) -> tuple[Path, dict]:
    """The run's model zip, written once for the module."""
    out = tmp_path_factory.mktemp("zip") / "model.zip"
    return out, package.package_model(run, out)


def test_zip_holds_the_model_onnx_readme_and_metrics_and_nothing_with_paths(run, zipped):
    out, result = zipped
    names = zipfile.ZipFile(out).namelist()
    folder = run.name
    expected = {"model.safetensors", "model.json", "model.onnx", "README.md", "metrics.json"}
    if (run / "report" / "metrics_report.json").is_file():  # another module made the shared run's report
        expected.add("metrics_report.json")
    assert set(names) == {f"{folder}/{n}" for n in expected} and sorted(result["files"]) == sorted(names)
    assert result["bytes"] == out.stat().st_size and 0.0 <= result["threshold"] <= 1.0
    with zipfile.ZipFile(out) as zf:
        assert zf.read(f"{folder}/model.safetensors") == (run / "model" / "model.safetensors").read_bytes()
        assert zf.read(f"{folder}/model.json") == (run / "model" / "model.json").read_bytes()
        readme = zf.read(f"{folder}/README.md").decode()
        text = b"".join(zf.read(n) for n in names if n.endswith((".json", ".md"))).decode()
    assert "python -m core predict --model" in readme and "create_model" in readme
    assert "onnxruntime" in readme and "softmax" in readme
    image_paths = pd.read_csv(run / "valid_predictions.csv")["path"].tolist()
    assert not any(Path(p).name in text for p in image_paths)  # no image names (no items, no predictions)
    assert not list(out.parent.glob("*.tmp*"))


def test_fresh_process_gets_the_validation_probabilities_from_both_files(run, zipped, tmp_path):
    out, _ = zipped
    with zipfile.ZipFile(out) as zf:
        zf.extractall(tmp_path)
    folder = tmp_path / run.name
    got, expected = fresh_routes(folder, run / "valid_predictions.csv")
    assert got["meta_classes"] == got["classes"]
    np.testing.assert_allclose(np.array(got["torch"]), expected, atol=1e-4)
    np.testing.assert_allclose(np.array(got["plain"]), expected, atol=1e-4)
    np.testing.assert_allclose(np.array(got["onnx"]), expected, atol=1e-4)


def test_the_threshold_is_the_reports_else_the_default_and_none_for_multiclass(tmp_path):
    from core.runs.rundir import RunFolder

    run = RunFolder(tmp_path)
    assert package.run_threshold(run, 2) == 0.5 and package.run_threshold(run, 3) is None
    run.report_dir.mkdir()
    (run.report_dir / "metrics_report.json").write_text(json.dumps({"threshold": 0.3}))
    assert package.run_threshold(run, 2) == 0.3 and package.run_threshold(run, 3) is None
    (run.report_dir / "metrics_report.json").write_text(json.dumps({"threshold": 7}))
    assert package.run_threshold(run, 2) == 0.5


def test_kfold_run_without_final_model_says_what_is_missing(tmp_path):
    run = tmp_path / "kf"
    (run / "folds" / "fold0").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"type": "kfold", "k": 2}))
    with pytest.raises(ModelFileError, match="k-fold run without a final model.*--final-model"):
        package.package_model(run, tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()


def test_too_large_a_zip_is_refused_and_leaves_nothing(run, tmp_path, monkeypatch):
    monkeypatch.setattr(package, "max_bytes", lambda: 1000)
    with pytest.raises(ModelFileError, match="over the"):
        package.package_model(run, tmp_path / "m.zip")
    assert not list(tmp_path.iterdir())


def test_phi_key_in_a_metrics_file_is_refused(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "metrics.json").write_text(json.dumps({"PatientName": "x"}))
    with pytest.raises(ValueError, match="patient-identifying"):
        package.package_model(copy, tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()


def ort_metadata(path: Path) -> dict:
    """An ONNX file's metadata_props as onnxruntime reads them (JSON values decoded)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}


def readme_functions(meta: dict) -> dict:
    """The README's onnxruntime example without its session, with `meta` given: its preprocess() to call."""
    code = package.ONNX_EXAMPLE
    for line in (
        'sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])',
        "meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}",
    ):
        assert line in code
        code = code.replace(line, "")
    g = {"__name__": "readme", "meta": meta}
    exec(code, g)
    return g


@pytest.mark.parametrize("method", ["squish", "crop", "pad"])
def test_readme_preprocessing_matches_the_apps(run, method, tmp_path):
    """The README's numpy/Pillow preprocessing gives the app's input for each resize method (non-square images)."""
    import dataclasses

    from PIL import Image

    from core.evaluation.predict import Predictor

    pred = Predictor(run / "model", device="cpu")
    pred.manifest = m = dataclasses.replace(pred.manifest, resize=method)
    meta = {"img_size": m.img_size, "channels": m.channels, "resize": method, "mean": m.mean, "std": m.std}
    preprocess = readme_functions(meta)["preprocess"]
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(90, 50), (50, 90), (33, 31), (20, 40), (32, 32)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        want = pred.normalized(pred.tensor_for(p)[None])[0].numpy()
        np.testing.assert_allclose(preprocess(p), want, atol=1e-5, err_msg=f"{method} {w}x{h}")


def test_cli_download_prints_json_and_refuses_a_kfold_run_without_a_model(run, tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "m.zip"
    assert main(["download", "--run", str(run), "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["zip"] == str(out) and zipfile.is_zipfile(out) and result["onnx_max_abs_diff"] < 1e-4
    onnx = tmp_path / "m.onnx"  # `export` writes the same metadata, with the run's threshold
    assert main(["export", "--model", str(run), "--onnx", str(onnx), "--no-verify"]) == 0
    capsys.readouterr()
    meta = ort_metadata(onnx)
    assert meta["threshold"] == result["threshold"] and meta["classes"] == result["classes"]
    kfold = tmp_path / "kf"
    (kfold / "folds").mkdir(parents=True)
    (kfold / "metrics.json").write_text("{}")
    assert main(["download", "--run", str(kfold), "--out", str(tmp_path / "k.zip")]) == 1
    assert "k-fold run without a final model" in capsys.readouterr().err
    assert main(["download", "--run", str(tmp_path / "nowhere")]) == 1
