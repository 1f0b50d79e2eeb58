"""Export a saved model to ONNX (for other runtimes), checked against PyTorch with onnxruntime when it is there.

Kept apart from the saved-model format (core.models.savedmodel): the app never reads ONNX back, and the exporter's
packages (onnx, onnxscript, onnxruntime) are optional; only `python -m core export` comes here.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from core.base.fsutil import atomic_writer
from core.models.savedmodel import Manifest
from core.models.weightfiles import ModelFileError


def export_onnx(
    model: torch.nn.Module, manifest: Manifest, out_path: str | Path, verify: bool = True, atol: float = 1e-4
) -> dict:
    """Export to ONNX with a dynamic batch axis; optionally check onnxruntime agrees with PyTorch within atol."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ModelFileError("ONNX export needs the 'onnx' package: pip install onnx") from None
    out_path = Path(out_path)
    n_in, size = manifest.n_in, manifest.img_size
    model = model.eval().to("cpu")
    dummy = torch.randn(1, n_in, size, size)
    with atomic_writer(out_path) as tmp:
        _onnx_export(model, dummy, tmp)
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


def _onnx_export(model: torch.nn.Module, dummy: torch.Tensor, path: Path) -> None:
    """torch.onnx.export (the dynamo exporter) with input 'image', output 'logits' and a dynamic batch axis."""
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
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=18,
            verbose=False,
        )
    if program is None:
        raise ModelFileError("ONNX export produced nothing")
    program.save(str(path))
