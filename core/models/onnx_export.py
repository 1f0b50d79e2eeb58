"""Export a saved model to ONNX (for other runtimes), checked against PyTorch with onnxruntime when it is there.

Kept apart from the saved-model format (core.models.savedmodel): the app never reads ONNX back, and the exporter's
packages (onnx, onnxscript, onnxruntime) are optional; only `python -m core export` and the model zip
(core.models.package) come here. The file carries what a runtime needs besides the graph as metadata_props.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from core.base.fsutil import atomic_writer
from core.models import temperature
from core.models.savedmodel import Manifest
from core.models.weightfiles import ModelFileError

INPUT_NAME, OUTPUT_NAME = "image", "logits"
TASK_SINGLE = "single"  # one label per image, softmax over the classes
OUTPUTS = {  # what the raw output means per task (core.models.heads)
    "single": f"{OUTPUT_NAME}: scores, one per class in 'classes' order, already divided by 'temperature' (the "
    "calibration fitted on validation; 1 when the model has none); softmax gives calibrated probabilities",
    "multilabel": f"{OUTPUT_NAME}: one raw score per finding in 'classes' order; a sigmoid each gives its probability, "
    "decided at its 'thresholds' entry",
    "ordinal": f"{OUTPUT_NAME}: K-1 CORN scores for the K grades in 'classes' order; the running product of their "
    "sigmoids is P(grade > k), the predicted grade is how many exceed 0.5",
    "ordinal_ce": f"{OUTPUT_NAME}: one score per grade in 'classes' order; softmax gives the grade probabilities, the "
    "predicted grade is the median grade (how many P(grade > k) exceed 0.5)",
}


def onnx_metadata(manifest: Manifest, threshold: float | None = None) -> dict[str, str]:
    """What a runtime needs besides the graph, as ONNX metadata_props (each value a JSON string).

    Classes in output order, the task, the input (size, channels, resize method, normalisation, DICOM window and
    frame) and, for a binary model, the decision threshold on the second class's probability.
    """
    task = manifest.task_type
    binary = len(manifest.classes) == 2 and task == TASK_SINGLE
    meta: dict[str, object] = {
        "format": "xray-trainer-onnx",
        "classes": list(manifest.classes),
        "task": task,
        "output": OUTPUTS["ordinal_ce" if task == "ordinal" and manifest.ordinal_head == "ce" else task],
        "input": INPUT_NAME,
        "input_shape": ["batch", manifest.n_in, manifest.img_size, manifest.img_size],
        "img_size": manifest.img_size,
        "n_in": manifest.n_in,
        "channels": manifest.channels,
        "resize": manifest.resize,
        "mean": manifest.mean,
        "std": manifest.std,
        "window": dataclasses.asdict(manifest.window) if manifest.window else None,
        "frame": manifest.frame,
        "arch": manifest.arch,
        "threshold": (0.5 if threshold is None else float(threshold)) if binary else None,
        "temperature": temperature.divisor(manifest),
    }
    if task == "multilabel":
        meta["thresholds"] = manifest.task.get("thresholds") or {}
    return {k: json.dumps(v) for k, v in meta.items()}


def export_onnx(
    model: torch.nn.Module,
    manifest: Manifest,
    out_path: str | Path,
    verify: bool = True,
    atol: float = 1e-4,
    threshold: float | None = None,
    metadata: dict[str, str] | None = None,
) -> dict:
    """Export to ONNX (with `onnx_metadata`) and a dynamic batch axis; optionally check onnxruntime agrees within atol.

    metadata: given for a module that applies its own calibration (the fold ensemble, core.models.onnx_ensemble);
    the manifest's temperature is then not applied again."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ModelFileError("ONNX export needs the 'onnx' package: pip install onnx") from None
    out_path = Path(out_path)
    n_in, size = manifest.n_in, manifest.img_size
    t = temperature.divisor(manifest) if metadata is None else 1.0
    model = (temperature.Scaled(model, t) if t != 1.0 else model).eval().to("cpu")
    dummy = torch.randn(1, n_in, size, size)
    with atomic_writer(out_path) as tmp:
        _onnx_export(model, dummy, tmp, metadata or onnx_metadata(manifest, threshold))
    result: dict[str, Any] = {"path": str(out_path), "max_abs_diff": None, "verified": False}
    if not verify:
        return result
    try:
        import onnxruntime as ort
    except ImportError:
        result["note"] = "not verified: pip install onnxruntime to compare with PyTorch"
        return result
    sess = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, n_in, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    diff = float(abs(expected - got).max())
    result.update(max_abs_diff=diff, verified=diff <= atol)
    if diff > atol:
        raise ModelFileError(f"ONNX output differs from PyTorch by {diff:.2e} (> {atol:g})")
    return result


def _onnx_export(model: torch.nn.Module, dummy: torch.Tensor, path: Path, metadata: dict[str, str]) -> None:
    """torch.onnx.export (the dynamo exporter) with input 'image', output 'logits', a dynamic batch axis, metadata."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise ModelFileError("ONNX export needs the 'onnxscript' package: pip install onnxscript") from None
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():  # the exporter's own chatter, not problems of the model
        warnings.filterwarnings("ignore", module=r"(torch\.onnx|torch\.export|torch\.jit|onnxscript|onnx_ir)")
        program = torch.onnx.export(
            model,
            (dummy,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=18,
            verbose=False,
        )
    if program is None:
        raise ModelFileError("ONNX export produced nothing")
    program.model.metadata_props.update(metadata)
    program.save(str(path))
