"""Items table + DataConfig -> fastai DataLoaders: reading, normalisation, transforms, workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.base import paths
from core.base.config import DataConfig, Window
from core.data.splits import SplitError

if TYPE_CHECKING:
    from core.data.decode_cache import DecodeCache


IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
GREY_IMAGENET_STATS = ([0.449], [0.226])
MAX_AUTO_WORKERS = 12  # decoding workers feeding one GPU (cached 224 px PNGs: ~500 images/s per worker)


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
        from core.data import decode_cache, imaging

        if not self.use_cache:
            return imaging.read_image(path, window=self.window, frame=self.frame)
        if self._cache is None:
            from pathlib import Path

            self._cache = decode_cache.DecodeCache(Path(self.cache_root) if self.cache_root else None)
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
    """fastai batch transforms: augmentation (train only, on the batch device) then Normalize.

    fastai's `aug_transforms` + `Brightness` + `Contrast` are what the settings mean; `core.data.augment.BatchAugment`
    computes exactly those where it covers the settings (all but vertical flips)."""
    from fastai.vision.augment import Brightness, Contrast, aug_transforms
    from fastai.vision.data import Normalize

    from core.data.augment import BatchAugment, covers

    tfms: list = []
    a = cfg.aug
    # the same pictures as fastai's transforms below, a fraction of their cost (core.data.augment)
    if covers(a):
        tfms.append(BatchAugment(a))
    elif a.enabled:
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


class FindingTargets:
    """get_y of a multi-label task: an items row's canonical label as a 1 / 0 / -1 vector over the findings."""

    def __init__(self, findings: list[str]):
        self.findings = list(findings)

    def __call__(self, row: pd.Series) -> np.ndarray:
        """The row's target vector (-1: uncertain, masked out of the loss)."""
        from core.data.labels import encode

        return encode(str(row["label"]), self.findings)


def target_block(classes: list[str], task: str):
    """(the target block, get_y): findings one-hot encoded (multilabel), else one class of `classes` in order."""
    from fastai.data.block import CategoryBlock, MultiCategoryBlock

    if task == "multilabel":
        return MultiCategoryBlock(encoded=True, vocab=classes), FindingTargets(classes)
    return CategoryBlock(vocab=classes, sort=task != "ordinal"), label_of  # grades keep their order


def make_datablock(classes: list[str], cfg: DataConfig, valid_idx, stats=None):
    """The fastai DataBlock for items rows: image reader, fixed class order, index split, transforms."""
    from fastai.data.block import DataBlock
    from fastai.data.transforms import IndexSplitter
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.core import PILImage, PILImageBW
    from fastai.vision.data import ImageBlock

    method = {"squish": ResizeMethod.Squish, "pad": ResizeMethod.Pad, "crop": ResizeMethod.Crop}[cfg.resize]
    reader = ImageReader(cfg.img_size, cfg.channels, cfg.window, cfg.frame, cfg.use_cache)
    y_block, get_y = target_block(classes, cfg.task.type)
    return DataBlock(
        blocks=(ImageBlock(cls=PILImageBW if cfg.channels == "grey" else PILImage), y_block),
        get_x=reader,
        get_y=get_y,
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
    if not classes:
        from core.data.labels import task_classes

        classes = task_classes(frame["label"], cfg.task.type, cfg.task.order)
    stats = input_stats(frame.iloc[np.setdiff1d(np.arange(len(frame)), vidx)], cfg, from_weights)
    from core.data.memloader import MemoryDL, MemoryWeightedDL

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
