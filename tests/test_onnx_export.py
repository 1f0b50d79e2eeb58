"""ONNX export: the dynamo exporter, verified against PyTorch, clear messages when a package is missing."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch

from core.models import archs, onnx_export
from core.models.savedmodel import Manifest
from core.models.weightfiles import ModelFileError

MANIFEST = Manifest(arch="resnet18", classes=["normal", "pneumonia"], n_in=3, img_size=32)


def test_onnx_export_verified(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = archs.create_model("resnet18", 2).eval()
    calls, real = [], torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: calls.append(k) or real(*a, **k))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # e.g. the deprecated TorchScript exporter's warning
        warnings.simplefilter("error", DeprecationWarning)
        result = onnx_export.export_onnx(model, MANIFEST, tmp_path / "model.onnx")
    assert [c.get("dynamo") for c in calls] == [True]
    assert result["verified"] and result["max_abs_diff"] < 1e-4
    sess = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    out = sess.run(None, {"image": x})[0]
    assert out.shape == (5, 2)
    with torch.no_grad():
        np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_onnx_export_needs_onnxscript_for_the_dynamo_exporter(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ModelFileError, match="pip install onnxscript"):
        onnx_export.export_onnx(archs.create_model("resnet18", 2), MANIFEST, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())  # no half-written file left


def test_onnx_missing_package_message(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = onnx_export.export_onnx(archs.create_model("resnet18", 2), MANIFEST, tmp_path / "m.onnx")
    assert result["verified"] is False and "pip install onnxruntime" in result["note"]
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModelFileError, match="pip install onnx"):
        onnx_export.export_onnx(archs.create_model("resnet18", 2), MANIFEST, tmp_path / "m.onnx")


def test_onnx_metadata_round_trips_through_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from core.base.config import Window

    manifest = Manifest(
        arch="resnet18",
        classes=["normal", "pneumonia"],
        img_size=32,
        channels="grey",
        resize="pad",
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        window=Window(center=40.0, width=400.0),
    )
    path = tmp_path / "m.onnx"
    onnx_export.export_onnx(archs.create_model("resnet18", 2), manifest, path, verify=False, threshold=0.3)
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    got = {k: json.loads(v) for k, v in meta.custom_metadata_map.items()}
    assert got["classes"] == ["normal", "pneumonia"] and got["task"] == "single"
    assert (got["img_size"], got["n_in"], got["channels"], got["resize"]) == (32, 3, "grey", "pad")
    assert got["mean"] == [0.5] * 3 and got["std"] == [0.25] * 3 and got["threshold"] == 0.3
    assert got["window"]["center"] == 40.0 and got["window"]["width"] == 400.0
    assert got["input_shape"] == ["batch", 3, 32, 32] and got["input"] == "image"
    multi = Manifest(arch="resnet18", classes=["a", "b", "c"], img_size=32)
    assert json.loads(onnx_export.onnx_metadata(multi, threshold=0.3)["threshold"]) is None  # argmax
    assert json.loads(onnx_export.onnx_metadata(multi)["mean"]) is None
