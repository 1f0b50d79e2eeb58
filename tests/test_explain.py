"""Top losses and Grad-CAM: ranking by loss, a map of the image size that finds the discriminative region."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from core.evaluation import evaluate, explain
from core.models import archs
from tests.test_predict import trained_run


def test_top_losses_ranked_by_cross_entropy():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    df = evaluate.predictions_frame(
        [f"{i}.png" for i in range(4)], [0, 0, 1, 1], probs, ["a", "b"], fold=[0, 1, 0, 1]
    )
    top = explain.top_losses(df, ["a", "b"])
    assert top["path"].tolist() == ["1.png", "2.png", "0.png", "3.png"]
    assert np.allclose(top["loss"], -np.log([0.2, 0.4, 0.9, 0.95]))
    assert top["rank"].tolist() == [1, 2, 3, 4] and top["correct"].tolist() == [False, False, True, True]
    assert top.loc[0, "prob_true"] == pytest.approx(0.2) and top.loc[0, "prob_pred"] == pytest.approx(0.8)
    assert "fold" in top and explain.top_losses(df, ["a", "b"], k=1, errors_only=True)["path"].tolist() == [
        "1.png"
    ]
    confused = explain.most_confused(df)
    assert confused.to_dict("records") == [
        {"label": "a", "pred": "b", "count": 1},
        {"label": "b", "pred": "a", "count": 1},
    ]


def _blob_batch(n: int, rng: np.random.Generator, size: int = 32, side: int = 6):
    """Noise images; class 1 has a bright square at a random place (its box is returned), class 0 none."""
    x = rng.normal(0, 0.15, (n, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 2, n)
    boxes = []
    for i in range(n):
        r, c = rng.integers(2, size - side - 2, 2)
        boxes.append((r, c))
        if y[i]:
            x[i, 0, r : r + side, c : c + side] += 1.0
    return torch.from_numpy(x), torch.from_numpy(y), boxes


@pytest.fixture
def one_thread():
    """Tiny models run far faster on one thread when the machine is busy (no OpenMP spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_grad_cam_highlights_the_discriminative_region(one_thread):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
    model = nn.Sequential(body, nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 2)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(25):  # converges in about 20 steps
        x, y, _ = _blob_batch(32, rng)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    x, y, boxes = _blob_batch(40, rng)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.9  # the task is learnt
    hits, ratios = 0, []
    for i in np.flatnonzero(y.numpy() == 1)[:10]:
        heat, probs = explain.grad_cam(model, body[-1], x[i : i + 1], class_index=1)
        assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
        r, c = boxes[i]
        inside = np.zeros((32, 32), bool)
        inside[max(0, r - 2) : r + 8, max(0, c - 2) : c + 8] = True
        hits += inside.flat[int(heat.argmax())]
        ratios.append(heat[inside].mean() / max(heat[~inside].mean(), 1e-6))
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert hits >= 9 and np.median(ratios) > 3
    assert not any(p.grad is not None for p in model.parameters())  # no gradients left behind


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    """The shared tiny trained run's model, loaded once."""
    from core.evaluation.predict import Predictor

    run = trained_run(tmp_path_factory.getbasetemp())
    return Predictor(run / "model", device="cpu"), pd.read_csv(run / "valid_predictions.csv")


def test_explain_with_the_trained_model(predictor):
    pred, valid = predictor
    res = explain.explain(pred, valid["path"][0], "opacity", display_size=128)
    size = pred.manifest.img_size
    assert res.heatmap.shape == (size, size) and res.heatmap.dtype == np.float32
    assert 0 <= res.heatmap.min() and res.heatmap.max() <= 1
    assert (
        isinstance(res.overlay, Image.Image) and res.overlay.size == (128, 128) and res.overlay.mode == "RGB"
    )
    assert res.image.size == (size, size) and res.class_name == "opacity" and res.class_index == 1
    assert res.prob == pytest.approx(valid["prob_opacity"][0], abs=1e-4)
    default = explain.explain(pred, valid["path"][0], display_size=None)
    assert default.class_name == valid["pred"][0] and default.overlay.size == (size, size)
    with pytest.raises(ValueError, match="unknown class"):
        explain.explain(pred, valid["path"][0], "zebra")


def test_grad_cam_shows_the_calibrated_probability_predict_shows(predictor):
    pred, valid = predictor
    kept = pred.temperature
    pred.temperature = (
        2.0  # a calibrated model: the map's p is the probability Predict shows, not the raw one
    )
    try:
        shown, _ = pred.predict_paths([valid["path"][0]])
        cam = explain.explain(pred, valid["path"][0], "opacity", display_size=None)
    finally:
        pred.temperature = kept
    assert cam.prob == pytest.approx(shown["prob_opacity"][0], abs=1e-4)
    raw = explain.explain(pred, valid["path"][0], "opacity", display_size=None)
    assert abs(raw.prob - 0.5) >= abs(cam.prob - 0.5)  # T = 2 pulls it towards 0.5


@pytest.mark.parametrize("arch", ["efficientnet_b0", "convnext_tiny", "resnet18"])
def test_grad_cam_layer_for_offered_architectures(arch):
    torch.manual_seed(0)
    model = archs.create_model(arch, 2, 3).eval()
    x = torch.randn(1, 3, 64, 64)
    heat, probs = explain.grad_cam(model, archs.gradcam_layer(model, arch), x, class_index=0)
    assert heat.shape == (64, 64) and np.isfinite(heat).all() and probs.shape == (2,)


def test_overlay_and_colour_map():
    heat = np.zeros((8, 8), np.float32)
    heat[2:4, 2:4] = 1.0
    img = Image.new("L", (8, 8), 128)
    out = np.asarray(explain.overlay(img, heat, size=32), dtype=int)
    assert out.shape == (32, 32, 3)
    assert abs(out[12, 12, 0] - out[12, 12, 2]) > abs(
        out[28, 28, 0] - out[28, 28, 2]
    )  # hot cells coloured most
    cmap = explain.colorize(np.array([[0.0, 1.0]]))
    assert cmap[0, 0, 2] > cmap[0, 0, 0] and cmap[0, 1, 0] > cmap[0, 1, 2]  # blue low, red high
