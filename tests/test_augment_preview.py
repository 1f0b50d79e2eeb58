"""Augmentation preview (same transforms as training) and split preview, on tiny generated images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.base.config import AugConfig, DataConfig, SplitConfig
from core.data.augment_preview import fold_preview, preview_augmentations, split_preview

SIZE = 32


@pytest.fixture
def items(tmp_path) -> pd.DataFrame:
    """Four asymmetric images (a bright top-left block on a left-right ramp), two classes, two patients each."""
    rows = []
    for i in range(4):
        arr = np.tile(np.linspace(0, 160, SIZE, dtype=np.uint8), (SIZE, 1))
        arr[: SIZE // 3, : SIZE // 4] = 255
        arr = np.roll(arr, i, axis=0)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.stack([arr] * 3, -1)).save(path)
        rows.append({"path": str(path), "label": "ab"[i % 2], "group": f"p{i // 2}", "split": ""})
    return pd.DataFrame(rows)


def plain(path: str) -> np.ndarray:
    """The image as training sees it without augmentation (already SIZE x SIZE)."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def geometric_only(**kw) -> DataConfig:
    """Flips only: no rotation, zoom, warp or lighting."""
    aug = AugConfig(rotate=0, zoom=1.0, warp=0, brightness=0, contrast=0, p_affine=1.0, **kw)
    return DataConfig(img_size=SIZE, aug=aug, use_cache=False)


def test_returns_n_uint8_images_of_configured_size(items):
    out = preview_augmentations(items, DataConfig(img_size=24, use_cache=False), n=5, seed=1)
    assert len(out) == 5
    assert all(a.shape == (24, 24, 3) and a.dtype == np.uint8 for a in out)
    grey = preview_augmentations(items, DataConfig(img_size=24, channels="grey", use_cache=False), n=3)
    assert [a.shape for a in grey] == [(24, 24, 1)] * 3


def test_same_seed_same_preview(items):
    a = preview_augmentations(items, DataConfig(img_size=SIZE, use_cache=False), n=4, seed=3)
    b = preview_augmentations(items, DataConfig(img_size=SIZE, use_cache=False), n=4, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_default_flips_are_horizontal_only(items):
    assert AugConfig().vertical_flip is False
    rows = items.sample(n=12, replace=True, random_state=0).reset_index(drop=True)
    out = preview_augmentations(items, geometric_only(), n=12, seed=0)
    kinds = []
    for img, path in zip(out, rows["path"]):
        ref = plain(path)
        errs = {
            "plain": np.abs(img - ref).mean(),
            "hflip": np.abs(img - ref[:, ::-1]).mean(),
            "vflip": np.abs(img - ref[::-1]).mean(),
        }
        kind = min(errs, key=errs.get)
        assert errs[kind] < 3, errs
        kinds.append(kind)
    assert "vflip" not in kinds and {"plain", "hflip"} <= set(kinds)


def test_disabled_augmentation_returns_plain_resized_image(tmp_path, items):
    big = tmp_path / "big.png"
    Image.open(items["path"][0]).resize((64, 48)).save(big)
    one = pd.DataFrame([{"path": str(big), "label": "a"}])
    cfg = DataConfig(img_size=SIZE, aug=AugConfig(enabled=False), use_cache=False)
    out = preview_augmentations(one, cfg, n=3, seed=5)
    ref = np.asarray(Image.open(big).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)
    assert len(out) == 3
    for img in out:
        assert np.abs(img - ref).mean() < 2.0
        assert np.array_equal(img, out[0])


def test_split_preview_counts_and_leaks(items):
    summary, leaks = split_preview(items, SplitConfig(method="group", valid_pct=0.5))
    assert leaks == []
    assert set(summary["split"]) == {"train", "valid"} and summary["items"].sum() == 4
    assert list(summary["patients"]) == [1, 1]
    leaky = items.assign(split=["train", "valid", "train", "valid"])
    summary, leaks = split_preview(leaky, SplitConfig(method="column"))
    assert leaks == ["p0", "p1"]


def test_fold_preview_one_row_per_fold(items):
    folds = fold_preview(items, SplitConfig(method="group", k_folds=2))
    assert list(folds["fold"]) == [1, 2] and folds["valid items"].sum() == 4
