"""Items table + DataConfig -> splits, k-fold indices and fastai DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from core import paths
from core.config import ConfigError, DataConfig, SplitConfig, Window

if TYPE_CHECKING:
    from core.imaging import DecodeCache

IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
GREY_IMAGENET_STATS = ([0.449], [0.226])
SPLITS = ("train", "valid", "test")
MAX_AUTO_WORKERS = 12  # decoding workers feeding one GPU (cached 224 px PNGs: ~500 images/s per worker)


class SplitError(ValueError):
    """A split that cannot be made from these items; the message says why."""


# ---------------------------------------------------------------- splits


def assign_splits(items: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """A copy of `items` with `split` set to train / valid / test for every row.

    Rows a source already marked "test" (a separate test folder) stay the holdout whatever the method.
    `keep_duplicates` holds out whole groups (checks.keep_duplicates_together merges duplicates into groups).
    "column" and "folder" keep the source's splits; rows without one train, and when no row is "valid"
    a validation part is carved out of train (grouped by patient when groups exist).
    """
    cfg.validate()
    out = items.copy().reset_index(drop=True)
    if "split" not in out:
        out["split"] = ""
    out["split"] = out["split"].fillna("").astype(str)
    if cfg.method in ("column", "folder"):
        return _splits_from_source(out, cfg)
    method = "group" if cfg.keep_duplicates and _has_groups(out) else cfg.method  # merged duplicate groups
    fixed_test = out["split"] == "test"
    out.loc[~fixed_test, "split"] = "train"
    pool = np.flatnonzero(~fixed_test.to_numpy())
    if cfg.test_pct > 0 and not fixed_test.any():
        test_idx = _holdout(out.iloc[pool], cfg.test_pct, method, cfg.seed)
        out.loc[pool[test_idx], "split"] = "test"
        pool = np.flatnonzero((out["split"] == "train").to_numpy())
    valid_pct = (
        cfg.valid_pct / (1 - cfg.test_pct) if cfg.test_pct > 0 and not fixed_test.any() else cfg.valid_pct
    )
    if valid_pct > 0:
        valid_idx = _holdout(out.iloc[pool], valid_pct, method, cfg.seed + 1)
        out.loc[pool[valid_idx], "split"] = "valid"
    return out


def train_subset(items: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """`items` without the training rows beyond `fraction` of the train split (seeded, stratified by label).

    Validation and test rows are kept as they are, so runs with different fractions share those sets.
    """
    if fraction >= 1:
        return items
    train_pos = np.flatnonzero((items["split"] == "train").to_numpy())
    labels = items["label"].astype(str).to_numpy()[train_pos]
    n_keep = max(1, int(round(fraction * len(train_pos))))
    if n_keep >= len(train_pos):
        return items
    stratify = labels if _can_stratify(labels, 1 - fraction) and n_keep >= len(set(labels)) else None
    keep, _ = train_test_split(train_pos, train_size=n_keep, random_state=seed, stratify=stratify)
    drop = np.setdiff1d(train_pos, keep)
    return items.drop(index=items.index[drop]).reset_index(drop=True)


def _splits_from_source(out: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """Keep the source's split column; fill blanks with train; carve valid when there is none."""
    bad = sorted(set(out["split"]) - {"", *SPLITS})
    if bad:
        raise SplitError(f"unknown split value(s) {bad}; use train, valid or test")
    if (out["split"] == "").all():
        raise SplitError("split method 'column' needs a split column with train/valid/test values")
    out.loc[out["split"] == "", "split"] = "train"
    if not (out["split"] == "valid").any():
        pool = np.flatnonzero((out["split"] == "train").to_numpy())
        method = "group" if _has_groups(out) else "stratified"
        valid_idx = _holdout(out.iloc[pool], cfg.valid_pct or 0.2, method, cfg.seed + 1)
        out.loc[pool[valid_idx], "split"] = "valid"
    return out


def _has_groups(items: pd.DataFrame) -> bool:
    """True when a non-empty group column exists."""
    return "group" in items and (items["group"].fillna("").astype(str) != "").any()


def _groups(items: pd.DataFrame) -> np.ndarray:
    """Group per row; rows without a group are their own group."""
    g = items["group"].fillna("").astype(str).to_numpy() if "group" in items else np.full(len(items), "")
    return np.where(g == "", np.array([f"__row{i}" for i in range(len(items))]), g)


def _holdout(items: pd.DataFrame, pct: float, method: str, seed: int) -> np.ndarray:
    """Positions (into `items`) of a held-out fraction `pct` chosen by `method`."""
    n = len(items)
    if n < 2:
        raise SplitError(f"cannot split {n} item(s)")
    idx = np.arange(n)
    labels = items["label"].astype(str).to_numpy()
    if method == "group":
        return _group_holdout(labels, _groups(items), pct, seed)
    stratify = labels if method == "stratified" and _can_stratify(labels, pct) else None
    _, held = train_test_split(idx, test_size=pct, random_state=seed, stratify=stratify)
    return np.sort(held)


def _can_stratify(labels: np.ndarray, pct: float) -> bool:
    """Stratification needs every class at least twice and room for each in the holdout."""
    counts = pd.Series(labels).value_counts()
    return counts.min() >= 2 and round(pct * len(labels)) >= len(counts)


def _group_holdout(labels: np.ndarray, groups: np.ndarray, pct: float, seed: int) -> np.ndarray:
    """Held-out positions with whole groups only, class-balanced when the data allows."""
    n_splits = max(2, int(round(1 / pct)))
    n_groups = len(set(groups))
    if n_groups < 2:
        raise SplitError("a split by patient needs at least 2 patients (groups)")
    if n_groups >= n_splits and pd.Series(labels).value_counts().min() >= n_splits:
        sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, held = next(sgkf.split(np.zeros(len(labels)), labels, groups))
        return np.sort(held)
    gss = GroupShuffleSplit(n_splits=1, test_size=pct, random_state=seed)
    _, held = next(gss.split(np.zeros(len(labels)), labels, groups))
    return np.sort(held)


def kfold_splits(
    items: pd.DataFrame, k: int, method: str = "stratified", seed: int = 42
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, valid_idx) positions for k folds over the non-test rows of `items`.

    Positions index `items` itself; test rows never appear. "group" keeps every patient in one fold
    (class-balanced when possible) and is used whenever the items have a group column, whatever the
    method, so that no patient is ever in two folds; "stratified" keeps class ratios; "random" is a
    plain shuffled KFold.
    """
    if k < 2:
        raise ConfigError(f"k-fold needs k >= 2, got {k}")
    split = items["split"].fillna("").astype(str).to_numpy() if "split" in items else np.full(len(items), "")
    pool = np.flatnonzero(split != "test")
    sub = items.iloc[pool]
    labels = sub["label"].astype(str).to_numpy()
    if len(pool) < k:
        raise SplitError(f"{len(pool)} items cannot make {k} folds")
    x = np.zeros(len(pool))
    if method == "group" or _has_groups(sub):
        groups = _groups(sub)
        if len(set(groups)) < k:
            raise SplitError(f"{len(set(groups))} patients cannot make {k} folds without sharing a patient")
        min_class = pd.Series(labels).value_counts().min()
        splitter = (
            StratifiedGroupKFold(k, shuffle=True, random_state=seed) if min_class >= k else GroupKFold(k)
        )
        folds = splitter.split(x, labels, groups)
    elif method == "stratified" and pd.Series(labels).value_counts().min() >= k:
        folds = StratifiedKFold(k, shuffle=True, random_state=seed).split(x, labels)
    else:
        folds = KFold(k, shuffle=True, random_state=seed).split(x)
    return [(pool[tr], pool[va]) for tr, va in folds]


def split_summary(items: pd.DataFrame) -> pd.DataFrame:
    """One row per split: item count, count per class, number of patients (groups)."""
    classes = sorted(items["label"].astype(str).unique())
    rows = []
    for name in [s for s in SPLITS if (items["split"] == s).any()]:
        part = items[items["split"] == name]
        counts = part["label"].astype(str).value_counts()
        row = {"split": name, "items": len(part), **{c: int(counts.get(c, 0)) for c in classes}}
        row["patients"] = int(part["group"].replace("", np.nan).nunique()) if "group" in part else 0
        rows.append(row)
    return pd.DataFrame(rows)


def group_leaks(items: pd.DataFrame) -> list[str]:
    """Groups (patients) that appear in more than one split; empty when the split is clean."""
    if not _has_groups(items):
        return []
    g = items[items["group"].fillna("").astype(str) != ""]
    per_group = g.groupby("group")["split"].nunique()
    return sorted(per_group[per_group > 1].index.astype(str))


# ---------------------------------------------------------------- fastai


@dataclass
class ImageReader:
    """Picklable get_x: an items row -> fastai PILImage, decoded once through the on-disk cache."""

    size: int | None
    channels: str = "rgb"
    window: Window | None = None
    frame: int = 0
    use_cache: bool = True
    cache_root: str = ""
    _cache: DecodeCache | None = field(default=None, repr=False, compare=False)

    def __call__(self, row: pd.Series):
        """Decode (or fetch from cache) and wrap for fastai."""
        from fastai.vision.core import PILImage, PILImageBW

        img = self.load(row["path"])
        if self.channels == "grey":
            return PILImageBW.create(img.convert("L"))
        return PILImage.create(img.convert("RGB"))

    def load(self, path: str):
        """A PIL image for `path`, through the cache when enabled."""
        from core import imaging

        if not self.use_cache:
            return imaging.read_image(path, window=self.window, frame=self.frame)
        if self._cache is None:
            from pathlib import Path

            self._cache = imaging.DecodeCache(Path(self.cache_root) if self.cache_root else None)
        return self._cache.get(path, self.size, window=self.window, frame=self.frame)


def label_of(row: pd.Series) -> str:
    """get_y: the label column as text."""
    return str(row["label"])


def normalization(cfg: DataConfig, from_weights: bool) -> str:
    """The normalisation a run applies: the setting, with "auto" made concrete.

    auto = ImageNet statistics when training starts from weights (pretrained ones were learnt on inputs
    normalised so); from scratch, the training images' own statistics. From scratch those measured better
    than ImageNet's on the test sets of bench/bench_parity.py, and, unlike no normalisation (fastai's choice),
    they keep a dim, low-contrast data set trainable: centred inputs keep BatchNorm's running statistics
    usable for evaluation (see bench/README.md).
    """
    if cfg.normalize != "auto":
        return cfg.normalize
    return "imagenet" if from_weights else "dataset"


def input_stats(
    train_frame: pd.DataFrame, cfg: DataConfig, from_weights: bool
) -> tuple[list[float], list[float]] | None:
    """Mean/std a run normalises its inputs with, or None for none: ImageNet's, or the training rows' own."""
    applied = normalization(cfg, from_weights)
    if applied == "none":
        return None
    if applied == "dataset":
        return dataset_stats(train_frame, cfg)
    return GREY_IMAGENET_STATS if cfg.channels == "grey" else IMAGENET_STATS


def loader_stats(dls) -> tuple[list[float], list[float]] | None:
    """Mean/std of the Normalize the DataLoaders actually apply (None without one): what a saved model records."""
    from fastai.vision.data import Normalize

    for tfm in dls.after_batch.fs:
        if isinstance(tfm, Normalize):
            return tfm.mean.flatten().tolist(), tfm.std.flatten().tolist()
    return None


def batch_transforms(cfg: DataConfig, stats: tuple[list[float], list[float]] | None) -> list:
    """fastai batch transforms: augmentation (train only, on the batch device) then Normalize."""
    from fastai.vision.augment import Brightness, Contrast, aug_transforms
    from fastai.vision.data import Normalize

    tfms: list = []
    a = cfg.aug
    if a.enabled:
        tfms += aug_transforms(
            do_flip=a.flip,
            flip_vert=a.vertical_flip,
            max_rotate=a.rotate,
            max_zoom=a.zoom,
            max_warp=a.warp,
            max_lighting=0.0,
            p_affine=a.p_affine,
            p_lighting=0.0,
            pad_mode="zeros",
        )
        if a.brightness > 0:
            tfms.append(Brightness(max_lighting=a.brightness, p=a.p_lighting))
        if a.contrast > 0:
            tfms.append(Contrast(max_lighting=a.contrast, p=a.p_lighting))
    if stats is not None:
        tfms.append(Normalize.from_stats(*stats))
    return tfms


def make_datablock(classes: list[str], cfg: DataConfig, valid_idx, stats=None):
    """The fastai DataBlock for items rows: image reader, fixed class order, index split, transforms."""
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import IndexSplitter
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.core import PILImage, PILImageBW
    from fastai.vision.data import ImageBlock

    method = {"squish": ResizeMethod.Squish, "pad": ResizeMethod.Pad, "crop": ResizeMethod.Crop}[cfg.resize]
    reader = ImageReader(cfg.img_size, cfg.channels, cfg.window, cfg.frame, cfg.use_cache)
    return DataBlock(
        blocks=(
            ImageBlock(cls=PILImageBW if cfg.channels == "grey" else PILImage),
            CategoryBlock(vocab=classes),
        ),
        get_x=reader,
        get_y=label_of,
        splitter=IndexSplitter(list(valid_idx)),
        item_tfms=Resize(cfg.img_size, method=method, pad_mode="zeros"),
        batch_tfms=batch_transforms(cfg, stats),
    )


def train_valid_frame(items: pd.DataFrame, valid_idx=None) -> tuple[pd.DataFrame, np.ndarray]:
    """Non-test rows (in order) and the positions of validation rows within them."""
    split = items["split"].fillna("").astype(str)
    if valid_idx is not None:
        is_valid = np.zeros(len(items), dtype=bool)
        is_valid[np.asarray(valid_idx, dtype=int)] = True
        keep = (split != "test").to_numpy()
        frame = items[keep].reset_index(drop=True)
        return frame, np.flatnonzero(is_valid[keep])
    frame = items[split != "test"].reset_index(drop=True)
    return frame, np.flatnonzero((frame["split"] == "valid").to_numpy())


def build_dataloaders(
    items: pd.DataFrame,
    cfg: DataConfig,
    valid_idx=None,
    classes: list[str] | None = None,
    oversample: bool = False,
    device=None,
    require_valid: bool = True,
    from_weights: bool = True,
):
    """fastai DataLoaders from an items table whose splits are set (or with explicit fold `valid_idx`).

    Test rows are never used here. `classes` fixes the label order (default: sorted labels).
    `oversample` draws training batches with class-balancing weights. `require_valid=False` allows an
    empty validation set (a final model trained on all data). `from_weights` (the model starts from
    pretrained or given weights, `TrainConfig.fine_tunes()`) decides what `normalize="auto"` applies.
    """
    cfg.validate()
    frame, vidx = train_valid_frame(items, valid_idx)
    if len(vidx) == len(frame) or (require_valid and len(vidx) == 0):
        raise SplitError("need both training and validation items; check the split settings")
    classes = classes or sorted(frame["label"].astype(str).unique())
    stats = input_stats(frame.iloc[np.setdiff1d(np.arange(len(frame)), vidx)], cfg, from_weights)
    from core.memloader import MemoryDL, MemoryWeightedDL

    block = make_datablock(classes, cfg, vidx, stats)
    kwargs = loader_kwargs(cfg, device)
    if not oversample:
        return block.dataloaders(frame, dl_type=MemoryDL, **kwargs)
    train_labels = np.delete(frame["label"].astype(str).to_numpy(), vidx)
    wgts = class_balance_weights(frame["label"].astype(str).to_numpy(), train_labels)
    dsets = block.datasets(frame)  # what fastai's weighted_dataloaders does, with the in-memory loader type
    return dsets.dataloaders(
        dl_type=MemoryWeightedDL,
        dl_kwargs=({"wgts": wgts[dsets.splits[0]]}, {}),
        after_item=block.item_tfms,
        after_batch=block.batch_tfms,
        **kwargs,
    )


def _uses_cuda(device) -> bool:
    """True when batches will go to a CUDA device (fastai's default device when none is given)."""
    import torch

    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def resolve_workers(n: int, cuda: bool) -> int:
    """DataLoader worker processes: n >= 0 as given; n < 0 = auto (0 on CPU, several on a GPU).

    On CPU the model, not decoding, is the bottleneck once the decode cache is warm, and workers take cores
    from it (bench/bench_train.py: 2 workers were slower on small images). A GPU needs parallel decoding.
    """
    if n >= 0:
        return n
    return max(1, min(MAX_AUTO_WORKERS, paths.cpu_cores() - 2)) if cuda else 0


def loader_kwargs(cfg: DataConfig, device=None) -> dict:
    """DataLoader settings: batch size, workers (auto when negative), pinned memory when feeding a GPU."""
    cuda = _uses_cuda(device)
    workers = resolve_workers(cfg.num_workers, cuda)
    kwargs = dict(bs=cfg.batch_size, num_workers=workers, device=device)
    if cuda and workers > 0:
        kwargs["pin_memory"] = True  # faster host-to-GPU copies of the uint8 batches
    return kwargs  # no persistent_workers: fastai's workers would then keep the first epoch's order


def class_balance_weights(labels: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Per-item sampling weights making every class equally likely (class counts from `reference`)."""
    counts = pd.Series(labels if reference is None else reference).value_counts()
    return np.array([1.0 / counts.get(label, 1) for label in labels])


def dataset_stats(
    frame: pd.DataFrame, cfg: DataConfig, max_items: int = 256
) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of up to `max_items` training images (after resize, scaled to 0..1)."""
    reader = ImageReader(cfg.img_size, cfg.channels, cfg.window, cfg.frame, cfg.use_cache)
    rng = np.random.default_rng(0)
    paths = frame["path"].to_numpy()
    chosen = rng.choice(paths, size=min(max_items, len(paths)), replace=False)
    mode = "L" if cfg.channels == "grey" else "RGB"
    pixels = np.concatenate(
        [
            (np.asarray(reader.load(p).convert(mode), dtype=np.float32) / 255.0).reshape(
                -1, 1 if mode == "L" else 3
            )
            for p in chosen
        ]
    )
    std = np.maximum(pixels.std(0), 1e-3)
    return pixels.mean(0).tolist(), std.tolist()
