"""BatchAugment makes the same training batches as fastai's aug_transforms + Brightness + Contrast (same draws, same
pixels), leaves validation pixels alone while drawing what fastai draws there, and is what training uses."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from fastai.torch_core import TensorCategory, TensorImage
from fasttransform.transform import Pipeline

from core.base.config import AugConfig, DataConfig
from core.data import augment, loaders

CONFIGS = [
    AugConfig(),  # the defaults: flip, rotate 10, zoom 1.1, warp 0.1, brightness and contrast 0.2
    AugConfig(warp=0.0),
    AugConfig(rotate=0.0, zoom=1.0),  # flip and warp only
    AugConfig(flip=False, rotate=0.0, zoom=1.0, warp=0.0),  # lighting only
    AugConfig(flip=False, warp=0.3, brightness=0.0),
    AugConfig(p_affine=1.0, p_lighting=1.0, warp=0.3, rotate=30.0, zoom=1.5, brightness=0.5, contrast=0.6),
]


def _fastai(a: AugConfig, monkeypatch) -> list:
    """fastai's own transforms for these settings (what batch_transforms builds where BatchAugment does not cover)."""
    with monkeypatch.context() as m:
        m.setattr(augment, "covers", lambda a: False)
        return loaders.batch_transforms(dataclasses.replace(DataConfig(), aug=a), None)


def _run(tfms: list, split: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch after the transforms at a fixed seed, and the next number the generator gives."""
    torch.manual_seed(7)
    out = Pipeline(tfms, split_idx=split)(
        (TensorImage(x.clone()), TensorCategory(torch.zeros(len(x)).long()))
    )
    return out[0].as_subclass(torch.Tensor), torch.rand(3)


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
@pytest.mark.parametrize("shape", [(12, 3, 32, 32), (5, 1, 24, 40)])
def test_training_batches_are_fastais_to_the_bit(cfg, shape, monkeypatch):
    x = torch.rand(*shape)
    old, new = _fastai(cfg, monkeypatch), [augment.BatchAugment(cfg)]
    (xo, ro), (xn, rn) = _run(old, 0, x), _run(new, 0, x)
    assert torch.equal(xo, xn) and torch.equal(ro, rn)
    assert not torch.equal(xn, x)  # something was done


@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
def test_validation_pixels_stay_and_the_random_stream_follows_fastai(cfg, monkeypatch):
    x = torch.rand(6, 3, 32, 32)
    (xo, ro), (xn, rn) = _run(_fastai(cfg, monkeypatch), 1, x), _run([augment.BatchAugment(cfg)], 1, x)
    assert torch.equal(xn, x) and torch.equal(ro, rn)
    assert torch.allclose(xo, x, atol=1e-5)  # fastai's identity resample: float rounding only


def test_training_uses_it_except_for_vertical_flips():
    def kinds(**aug):
        cfg = dataclasses.replace(DataConfig(), aug=AugConfig(**aug))
        return [type(t).__name__ for t in loaders.batch_transforms(cfg, ([0.5] * 3, [0.2] * 3))]

    assert kinds() == ["BatchAugment", "Normalize"]
    assert kinds(enabled=False) == ["Normalize"]
    assert "BatchAugment" not in kinds(vertical_flip=True) and "Brightness" in kinds(vertical_flip=True)


def test_a_batch_with_a_degenerate_warp_keeps_its_grid():
    coords = torch.zeros(1, 2, 2, 2)
    coeffs = torch.tensor([[[1.0], [0], [0], [0], [1], [0], [0], [-1.0]]])  # w = 1 - y... = 0 at y = 1 below
    coords[..., 1] = 1.0
    assert torch.equal(augment._apply_perspective(coords, coeffs), coords)
