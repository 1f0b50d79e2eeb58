"""Test-time augmentation: the views a model may be shown (flips only when training allowed them), each view's
transform, and predictions that are the mean over the transformed inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.base.config import AugConfig
from core.evaluation import tta
from core.models import archs
from core.models.savedmodel import Manifest, save_model


def test_views_follow_the_flips_training_allowed():
    names = [v.name for v in tta.views(tta.allowed(AugConfig()))]
    assert names[:2] == ["image", "mirror left-right"] and "mirror up-down" not in names
    assert sum(n.startswith("shift") for n in names) == 4 and sum(n.startswith("zoom") for n in names) == 2
    none = tta.views(tta.allowed(AugConfig(flip=False)))
    assert not any(v.hflip or v.vflip for v in none) and len(none) == 7
    both = tta.views(tta.allowed(AugConfig(vertical_flip=True)))
    assert any(v.vflip for v in both)
    assert not any(v.hflip for v in tta.views(tta.allowed(AugConfig(enabled=False))))
    assert tta.flips_for({}) == {"flip": False, "vertical_flip": False}  # a stand-alone model: no flips


def test_each_view_moves_the_pixels_it_says():
    x = torch.rand(2, 1, 50, 50)
    right = tta.apply(x, tta.View("r", dx=0.04))  # 4 % of 50 px = 2 px, exact on the pixel grid
    torch.testing.assert_close(right[..., 2:], x[..., :-2], atol=1e-5, rtol=0)
    assert right[..., :2].abs().max() < 1e-5  # black comes in
    down = tta.apply(x, tta.View("d", dy=0.04))
    torch.testing.assert_close(down[..., 2:, :], x[..., :-2, :], atol=1e-5, rtol=0)
    torch.testing.assert_close(tta.apply(x, tta.View("m", hflip=True)), torch.flip(x, dims=[3]))
    torch.testing.assert_close(tta.apply(x, tta.IDENTITY), x)
    square = torch.zeros(1, 1, 40, 40)
    square[..., 10:30, 10:30] = 1
    bigger, smaller = (tta.apply(square, tta.View("z", scale=s)).sum() for s in (1.1, 0.9))
    assert bigger > square.sum() > smaller  # zoom in enlarges the square, zoom out shrinks it


@pytest.mark.parametrize("flip", [True, False])
def test_tta_probabilities_are_the_mean_over_the_views(tmp_path, flip):
    from core.evaluation.predict import Predictor

    torch.manual_seed(0)
    record = {tta.KEY: tta.allowed(AugConfig(flip=flip))}
    manifest = Manifest(arch="resnet18", classes=["a", "b"], img_size=32, mean=[0.5] * 3, std=[0.25] * 3)
    save_model(
        archs.create_model("resnet18", 2).eval(),
        tmp_path / "m",
        Manifest(**{**manifest.__dict__, "extra": record}),
    )
    assert json.loads((tmp_path / "m" / "model.json").read_text())[tta.KEY]["flip"] is flip
    pred = Predictor(tmp_path / "m", device="cpu")
    assert any(v.hflip for v in pred.tta_views) is flip
    batch = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    each = [pred.probs(tta.apply(batch, v)) for v in pred.tta_views]
    got = pred.probs(batch, tta=True)
    np.testing.assert_allclose(got, np.mean(each, axis=0), atol=1e-6)
    assert not np.allclose(got, pred.probs(batch), atol=1e-4)  # the views change something
