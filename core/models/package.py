"""The model as a zip a lab can take away: weights + manifest, the ONNX file with its preprocessing, a README, metrics.

One zip per finished run's final model: model.safetensors and model.json exactly as core.models.savedmodel wrote them,
model.onnx (exported and checked against PyTorch by core.models.onnx_export, carrying its preprocessing as
metadata), for a k-fold run ensemble.onnx (its fold models averaged in one graph), README.md (how to load it with this app, with PyTorch, with onnxruntime only), the run's metrics.json
and, when a report was made, its metrics file. Nothing that names an image or a patient goes in (no items table, no
predictions with paths); JSON files are refused when they hold a patient-identifying key.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from core.base.fsutil import atomic_writer
from core.base.paths import env_int
from core.models import onnx_export, savedmodel
from core.models.weightfiles import ModelFileError
from core.runs.rundir import METRICS, MODEL_MANIFEST, MODEL_WEIGHTS, REPORT_METRICS, RunFolder

ONNX_FILE = "model.onnx"
ENSEMBLE_ONNX_FILE = (
    "ensemble.onnx"  # k-fold runs: the fold models averaged in one graph (core.models.onnx_ensemble)
)
ENSEMBLE_README = """
## The fold ensemble (`{file}`)

The {k} fold models of this k-fold run as one ONNX graph: same input, preprocessing and metadata as `model.onnx`
(the first fold's normalisation; each fold re-normalises inside). Its `logits` output is the log of the mean of
the folds' calibrated probabilities, so softmax of it (a sigmoid per finding for multi-label) gives the ensemble's
probabilities, exactly what this app's "all folds as one model" predicts. It is k times slower than one model.
"""
README_FILE = "README.md"
MAX_MB_DEFAULT = 2048  # a zip larger than this is refused ($XRT_PACKAGE_MAX_MB)


def max_bytes() -> int:
    """The largest zip written, from $XRT_PACKAGE_MAX_MB (default 2048 MB)."""
    return env_int("XRT_PACKAGE_MAX_MB", MAX_MB_DEFAULT, minimum=1) * 1024 * 1024


def package_model(run_dir: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Write the zip of a finished run's final model to out_path (atomically); what went in, as plain values."""
    run = RunFolder(run_dir)
    manifest_path = savedmodel.find_manifest(run.path)  # a k-fold run without a final model says so here
    if not run.is_finished():
        raise ModelFileError(f"the run {run.name} has not finished ({METRICS} is missing)")
    files = {
        MODEL_WEIGHTS: manifest_path.parent / MODEL_WEIGHTS,
        MODEL_MANIFEST: manifest_path,
        METRICS: run.metrics,
    }
    if (run.report_dir / REPORT_METRICS).is_file():
        files[REPORT_METRICS] = run.report_dir / REPORT_METRICS
    weights = files[MODEL_WEIGHTS]
    _check_files(files, extra=weights.stat().st_size if weights.is_file() else 0)  # ONNX ~ the weights' size
    model, manifest = savedmodel.load_model(manifest_path)  # sha256 of the weights checked
    threshold = run_threshold(run, len(manifest.classes))
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="package-") as tmp:
        files[ONNX_FILE] = Path(tmp) / ONNX_FILE
        check = onnx_export.export_onnx(model, manifest, files[ONNX_FILE], verify=True, threshold=threshold)
        if not check.get("verified"):
            raise ModelFileError(
                f"the ONNX file could not be checked against PyTorch: {check.get('note', '')}"
            )
        readme = readme_text(manifest, threshold, run.name, check.get("max_abs_diff"))
        members = _ensemble_onnx(run, files, Path(tmp), threshold)
        if members:
            readme += ENSEMBLE_README.format(file=ENSEMBLE_ONNX_FILE, k=members)
        size = _write_zip(out_path, run.name, files, readme)
    return {
        "zip": str(out_path),
        "bytes": size,
        "files": [f"{run.name}/{n}" for n in (*files, README_FILE)],
        "classes": manifest.classes,
        "input": [1, manifest.n_in, manifest.img_size, manifest.img_size],
        "threshold": threshold,
        "onnx_max_abs_diff": check.get("max_abs_diff"),
        "ensemble_members": members,
    }


def _ensemble_onnx(run: RunFolder, files: dict[str, Path], tmp: Path, threshold: float | None) -> int:
    """A k-fold run's fold ensemble as one checked ONNX graph added to `files`; how many folds (0: none)."""
    from core.models import onnx_ensemble

    k = len(list(run.fold_models()))
    if k < 2 or savedmodel.read_manifest(next(run.fold_models())[1])[0].task_type == "ordinal":
        return 0
    files[ENSEMBLE_ONNX_FILE] = tmp / ENSEMBLE_ONNX_FILE
    check = onnx_ensemble.export_ensemble_onnx(run.path, files[ENSEMBLE_ONNX_FILE], threshold=threshold)
    if not check.get("verified"):
        raise ModelFileError(f"the ensemble ONNX file could not be checked: {check.get('note', '')}")
    return k


def run_threshold(run: RunFolder, n_classes: int) -> float | None:
    """A binary run's decision threshold: the one its report used, else the app's default 0.5; None otherwise."""
    if n_classes != 2:
        return None
    report = run.report_dir / REPORT_METRICS
    value = _read_json(report).get("threshold") if report.is_file() else None
    return float(value) if isinstance(value, (int, float)) and 0.0 <= value <= 1.0 else 0.5


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file ({} when unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _check_files(files: dict[str, Path], extra: int = 0) -> None:
    """Refuse JSON files with a patient-identifying key, and files (+ extra bytes) above max_bytes()."""
    for name, path in files.items():
        if path.suffix == ".json":
            savedmodel.refuse_phi(_read_json(path), name)
    limit = max_bytes()
    total = sum(p.stat().st_size for p in files.values()) + extra
    if total > limit:
        raise ModelFileError(
            f"the model zip would be {total / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit"
        )


def _write_zip(out_path: Path, folder: str, files: dict[str, Path], readme: str) -> int:
    """The zip (every file under `folder/`), refused above max_bytes() before and after writing; its size."""
    _check_files(files)
    limit = max_bytes()
    with atomic_writer(out_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, path in files.items():
                zf.write(path, f"{folder}/{name}")
            zf.writestr(f"{folder}/{README_FILE}", readme)
        size = Path(tmp).stat().st_size
        if size > limit:
            raise ModelFileError(
                f"the model zip is {size / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit"
            )
    return size


# ---------------------------------------------------------------- the README

ONNX_EXAMPLE = '''\
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}


def fit(img, size, method):
    """squish: stretch to size x size; crop: centre square; pad: black borders to a square (then resize)."""
    w, h = img.size
    if method == "squish":
        box, top_left = (w, h), (0, 0)
    else:
        m = (min if method == "crop" else max)(w / size, h / size)
        box = (int(m * size), int(m * size))
        top_left = (int(0.5 * (w - box[0])), int(0.5 * (h - box[1])))
    canvas = Image.new(img.mode, box)  # zeros: black where the image does not reach
    canvas.paste(img, (-top_left[0], -top_left[1]))
    return canvas.resize((size, size), Image.Resampling.BILINEAR)


def to_8bit(img):
    """16-bit / float greyscale stretched min-max to 0..255 (as the app does), then grey or RGB as trained."""
    if img.mode.startswith(("I", "F")):
        a = np.asarray(img, dtype=np.float32)
        lo, hi = a.min(), a.max()
        a = (a - lo) * np.float32(255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        img = Image.fromarray(np.rint(np.clip(a, 0, 255)).astype(np.uint8), "L")
    return img.convert("L" if meta["channels"] == "grey" else "RGB")  # (the app puts transparency over black)


def preprocess(path):
    """An image file -> a (n_in, size, size) float32 array, as the app prepares it."""
    size = meta["img_size"]
    img = to_8bit(ImageOps.exif_transpose(Image.open(path)))
    w, h = img.size
    if min(w, h) > size:  # first shrink so the shorter side is img_size (Lanczos), as training did
        new = (size, max(1, round(h * size / w))) if w <= h else (max(1, round(w * size / h)), size)
        img = img.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
    x = np.asarray(fit(img, size, meta["resize"]), dtype=np.float32) / 255.0
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    if meta["mean"] is not None:
        x = (x - np.float32(meta["mean"])[:, None, None]) / np.float32(meta["std"])[:, None, None]
    return x.astype(np.float32)


def predict(paths):
    """Class probabilities (softmax of the logits), one row per file, columns in meta["classes"] order."""
    logits = sess.run(None, {meta["input"]: np.stack([preprocess(p) for p in paths])})[0]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


if __name__ == "__main__":
    for path, p in zip(sys.argv[1:], predict(sys.argv[1:])):
        if meta["threshold"] is not None:  # binary: the second class when its probability >= threshold
            pred = meta["classes"][int(p[1] >= meta["threshold"])]
        else:
            pred = meta["classes"][int(p.argmax())]
        print(path, pred, dict(zip(meta["classes"], p.round(4).tolist())))
'''


def readme_text(
    manifest: savedmodel.Manifest, threshold: float | None, run_name: str, diff: float | None
) -> str:
    """README.md of the zip: what is inside and three ways to load it (this app, PyTorch, onnxruntime only)."""
    m = manifest
    norm = f"mean {m.mean}, std {m.std}" if m.mean is not None else "none (pixels stay in 0..1)"
    decision = (
        f"binary: predict **{m.classes[1]}** when its probability >= {threshold:g}, else **{m.classes[0]}**"
        if threshold is not None
        else "the class with the highest probability"
    )
    window = f"; DICOM files were decoded with window {m.window}" if m.window else ""
    parts = [
        f"# Model of run {run_name}\n",
        f"Architecture `{m.arch}`, {len(m.classes)} classes in output order: "
        + ", ".join(f"`{c}`" for c in m.classes)
        + f". Decision: {decision}. Weights: {m.model_weights or 'last'} epoch.\n",
        README_FILES,
        "## Input\n",
        f"A float32 array of shape (batch, {m.n_in}, {m.img_size}, {m.img_size}) named `image`; output `logits` "
        f"(one per class; for a calibrated model already divided by the temperature in the metadata; softmax gives probabilities). Preprocessing: decode to 8-bit "
        f"{'greyscale' if m.channels == 'grey' else 'RGB'} (16-bit or float greyscale stretched min-max){window}; shrink so the shorter side is {m.img_size} px "
        f"(Lanczos); resize to {m.img_size} x {m.img_size} with method `{m.resize}` (bilinear); scale to 0..1; "
        f"normalise: {norm}. The same values are in `{MODEL_MANIFEST}` and in the ONNX file's metadata.\n",
        README_LOAD.format(
            n=len(m.classes), n_in=m.n_in, arch=m.arch, weights=MODEL_WEIGHTS, manifest=MODEL_MANIFEST
        ),
        "### 3. With onnxruntime only (numpy + Pillow, no PyTorch)\n",
        "Everything it needs is in the ONNX file's metadata. Save this as `predict_onnx.py` beside `model.onnx` and "
        "run `python predict_onnx.py image1.png image2.png` (ordinary image files; DICOM needs the window above):\n",
        f"```python\n{ONNX_EXAMPLE}```\n",
        "The ONNX file was checked against PyTorch on random input"
        + (f" (largest difference {diff:.1e})" if diff is not None else "")
        + ".\n",
    ]
    return "\n".join(parts)


README_FILES = f"""## Files

| file | what it is |
|---|---|
| `{MODEL_WEIGHTS}` | the weights (safetensors: plain tensors, no code runs when loading) |
| `{MODEL_MANIFEST}` | the manifest: architecture, classes, input size, preprocessing, training settings, sha256 of the weights |
| `{ONNX_FILE}` | the same network for ONNX runtimes, with its preprocessing as metadata |
| `{METRICS}` | the run's metrics (which epoch, which set each number is measured on) |
| `{REPORT_METRICS}` | the evaluation report's metrics with confidence intervals (only when a report was made) |
"""

README_LOAD = """## Loading it

### 1. With this app (same preprocessing, DICOM included)

Unzip, then `python -m core predict --model <unzipped folder> <image folder or file> --out predictions.csv`
(or evaluate it on a labelled set with `python -m core evaluate --model <unzipped folder> ...`).

### 2. With PyTorch and safetensors

The network is fastai's body + head around a `{arch}` backbone, so it has to be rebuilt with this app's code,
then the weights load strictly:

```python
from core.models.savedmodel import load_model

model, manifest = load_model("<unzipped folder>")  # checks the sha256, rebuilds, loads strictly, eval mode
```

which is the same as

```python
from safetensors.torch import load_file
from core.models.archs import create_model

model = create_model("{arch}", {n}, {n_in})
model.load_state_dict(load_file("{weights}"))
model.eval()
```

Feed it the input described above; `torch.softmax(model(x), dim=1)` gives the probabilities. When `{manifest}`
has a `calibration` record, divide the logits by its `temperature` first to get the calibrated probabilities the
app reports (`torch.softmax(model(x) / T, dim=1)`); the ONNX file has the division built in.
"""
