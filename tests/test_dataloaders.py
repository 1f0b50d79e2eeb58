"""fastai DataLoaders are built from every source form (folder, CSV, DICOM) through the decode cache."""

from __future__ import annotations

import pytest
import torch

from core.base.config import DataConfig, SourceConfig, SplitConfig, Window
from core.data import decode_cache, imaging
from core.data.loaders import build_dataloaders
from core.data.sample import ensure_sample
from core.data.sources import load_source
from core.data.splits import assign_splits, kfold_splits


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A small built-in sample (12 synthetic patients) in all three forms."""
    return ensure_sample(tmp_path_factory.mktemp("sample"), n_patients=12)


SOURCES = {
    "folder": lambda r: SourceConfig(kind="folder", root=str(r / "folder")),
    "csv": lambda r: SourceConfig(kind="csv", csv_path=str(r / "labels.csv"), group_col="patient_id"),
    "dicom": lambda r: SourceConfig(kind="dicom", root=str(r / "dicom"), group_tag="PatientID"),
}


@pytest.mark.parametrize("form", list(SOURCES))
@pytest.mark.parametrize("channels", ["rgb", "grey"])
def test_batch_from_each_source_form(sample, form, channels):
    ds = load_source(SOURCES[form](sample))
    assert ds.problems.empty and len(ds.classes) == 2
    method = "group" if form != "folder" else "stratified"
    items = assign_splits(ds.items, SplitConfig(method=method, valid_pct=0.25, seed=0))
    cfg = DataConfig(img_size=48, batch_size=8, channels=channels)
    dls = build_dataloaders(items, cfg, device=torch.device("cpu"))
    x, y = dls.one_batch()
    assert tuple(x.shape) == (8, 1 if channels == "grey" else 3, 48, 48)
    assert x.dtype == torch.float32 and set(y.tolist()) <= {0, 1}
    assert list(dls.vocab) == ds.classes
    assert len(dls.valid_ds) == (items["split"] == "valid").sum()
    assert 0.5 < x.std() < 2.0  # normalised, not all-white or all-black


@pytest.mark.parametrize(
    "setting, from_weights, applied",
    [
        ("auto", True, "imagenet"),  # pretrained or given weights were learnt on ImageNet-normalised inputs
        ("auto", False, "dataset"),  # from scratch: the training images' own statistics
        ("imagenet", False, "imagenet"),  # an explicit choice is kept either way
        ("none", True, "none"),
        ("dataset", False, "dataset"),
    ],
)
def test_auto_normalisation_follows_the_starting_weights(sample, setting, from_weights, applied):
    from core.data.loaders import IMAGENET_STATS, loader_stats, normalization

    cfg = DataConfig(img_size=32, batch_size=4, normalize=setting)
    assert normalization(cfg, from_weights) == applied
    items = assign_splits(load_source(SOURCES["csv"](sample)).items, SplitConfig(method="group", seed=0))
    stats = loader_stats(build_dataloaders(items, cfg, from_weights=from_weights))
    if applied == "none":
        assert stats is None
    elif applied == "imagenet":
        assert stats == (pytest.approx(IMAGENET_STATS[0]), pytest.approx(IMAGENET_STATS[1]))
    else:
        assert stats is not None and stats[0] != pytest.approx(IMAGENET_STATS[0], abs=1e-3)


def test_fold_dataloaders_use_fold_indices(sample):
    ds = load_source(SOURCES["csv"](sample))
    items = assign_splits(ds.items, SplitConfig(method="group"))
    folds = kfold_splits(items, 3, method="group")
    dls = build_dataloaders(items, DataConfig(img_size=32, batch_size=4), valid_idx=folds[1][1])
    valid_paths = set(dls.valid_ds.items["path"])
    assert valid_paths == set(items.iloc[folds[1][1]]["path"])


def test_decode_cache_holds_every_training_item_resized(sample):
    ds = load_source(SOURCES["dicom"](sample))
    items = assign_splits(ds.items, SplitConfig(method="group"))
    cfg = DataConfig(img_size=32, batch_size=4, use_cache=True)
    dls = build_dataloaders(items, cfg)
    for _ in range(2):  # two epochs over the data
        for _ in dls.train:
            pass
    cache = decode_cache.DecodeCache()
    key_files = list(cache.root.rglob("*.png"))
    assert len(key_files) >= len(dls.train_ds)  # every training item has a cached, resized entry
    img = cache.get(
        dls.train_ds.items["path"].iloc[0], 32
    )  # a training item (the split follows keyed pseudonyms)
    assert min(img.size) == 32 and cache.hits >= 1


def test_user_window_changes_dicom_pixels(sample):
    ds = load_source(SOURCES["dicom"](sample))
    path = ds.items[ds.items["kind"] == "dicom"]["path"].iloc[1]
    a = imaging.read_image(path)
    b = imaging.read_image(path, window=Window(center=0, width=50))
    assert a.size == b.size and a.tobytes() != b.tobytes()


def _epoch_batches(dls, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every training batch of one epoch after seeding (augmentation included), on the CPU."""
    from fastai.torch_core import set_seed

    set_seed(seed, reproducible=True)
    return [(x.clone(), y.clone()) for x, y in dls.train]


@pytest.mark.parametrize("oversample", [False, True])
def test_stored_items_give_the_same_batches_as_building_them(sample, monkeypatch, oversample):
    """Epoch 2 from the in-memory store equals epoch 2 built item by item (same seed, augmentation on)."""
    from fastai.torch_core import set_seed

    from core.data.memloader import MemoryItemsMixin

    ds = load_source(SOURCES["csv"](sample))
    items = assign_splits(ds.items, SplitConfig(method="group", valid_pct=0.25, seed=0))
    cfg = DataConfig(img_size=32, batch_size=8)
    runs = {}
    for budget in ("64", "0"):  # 64 MB: stored; 0: the store is off, every item is built each epoch
        monkeypatch.setenv("XRT_LOADER_MEMORY_MB", budget)
        set_seed(0, reproducible=True)  # the loader's own shuffling generator is drawn when it is built
        dls = build_dataloaders(items, cfg, oversample=oversample, device=torch.device("cpu"))
        assert isinstance(dls.train, MemoryItemsMixin) and isinstance(dls.valid, MemoryItemsMixin)
        runs[budget] = [_epoch_batches(dls, seed) for seed in (1, 2)]
        store = dls.train._store
        if budget == "64":
            assert store is not None and store.filled.sum() > 0.8 * len(dls.train_ds)
        else:
            assert store is None
    for stored, built in zip(runs["64"], runs["0"]):
        assert len(stored) == len(built)
        for (xs, ys), (xb, yb) in zip(stored, built):
            assert type(xs) is type(xb) and torch.equal(ys, yb)
            assert torch.allclose(xs, xb, atol=1e-6)


def test_random_crop_on_the_training_side_is_not_stored(sample):
    """A random resize position differs each epoch: the training loader builds items; validation stores them."""
    ds = load_source(SOURCES["folder"](sample))
    items = assign_splits(ds.items, SplitConfig(method="stratified", valid_pct=0.25, seed=0))
    dls = build_dataloaders(items, DataConfig(img_size=32, batch_size=8, resize="crop"))
    for _ in dls.train:
        pass
    for _ in dls.valid:
        pass
    assert dls.train._store is None and dls.valid._store is not None
    assert dls.valid._store.filled.all()
