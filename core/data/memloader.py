"""DataLoaders that keep each item after its item transforms in memory: epoch 2 onwards costs no decoding.

Every epoch fastai builds each item again: read the cached PNG, wrap it for fastai, resize, make a tensor, look up
the label, all in Python (about 1 ms an item on a CPU, where the app uses no worker processes). When an item's
transforms are deterministic (squish resize; any resize on the validation side), the result is the same every
epoch, so the first pass stores it in one uint8 array and later batches are slices of that array. The batch
transforms (augmentation, normalisation) still run on every batch, as before, so training sees the same batches.

The store is filled lazily (an LR finder that touches 30 batches stores only those) and only when it fits the
memory budget (`XRT_LOADER_MEMORY_MB`, default min(1024 MB, a tenth of the machine's RAM), per loader), in the
main process only (a worker process's copy would be lost with the worker).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastai.callback.data import WeightedDL
from fastai.data.core import TfmdDL
from fastai.vision.augment import RandTransform, Resize, ResizeMethod
from fastcore.basics import chunked

from core.base import paths

DEFAULT_BUDGET_MB = 1024


def budget_bytes() -> int:
    """Bytes one loader may keep: `XRT_LOADER_MEMORY_MB`, else min(1024 MB, a tenth of RAM); 0 turns it off."""
    mb = paths.env_int("XRT_LOADER_MEMORY_MB", -1, minimum=0)
    if mb < 0:
        import psutil

        mb = min(DEFAULT_BUDGET_MB, psutil.virtual_memory().total // (10 * 2**20))
    return int(mb) * 2**20


@dataclass
class _Store:
    """Items stored so far: images (N, C, H, W) uint8, labels (N,), which rows are filled, and their fastai types."""

    x: torch.Tensor
    y: torch.Tensor
    filled: np.ndarray
    x_type: type
    y_type: type


class MemoryItemsMixin:
    """Mixin for a fastai TfmdDL: batches of stored items once each item was built once (see the module doc)."""

    _store: _Store | None = None
    _store_off: bool = False
    # provided by the fastai DataLoader this is mixed into
    dataset: Any
    bs: int
    drop_last: bool
    do_item: Callable[[int], Any]
    do_batch: Callable[[list], Any]

    def create_batches(self, samps):
        """Batches from the store where items are stored, building (and storing) the others."""
        if not self._store_usable():
            yield from super().create_batches(samps)  # the fastai DataLoader's own
            return
        for idxs in chunked(samps, self.bs, self.drop_last):
            batch = None if self._store_off else self._batch(list(idxs))
            yield batch if batch is not None else self._built(list(idxs))

    def _built(self, idxs: list[int]):
        """One batch made the usual way (each item through the item transforms, then collated)."""
        items = [o for o in map(self.do_item, idxs) if o is not None]
        return self.do_batch(items)

    def _store_usable(self) -> bool:
        """True in the main process, for an indexed data set whose item transforms give the same result each time."""
        if self._store_off or torch.utils.data.get_worker_info() is not None:
            return False
        ok = getattr(self, "indexed", False) and not getattr(self, "prebatched", False)
        return bool(ok and self.dataset is not None and len(self.dataset) and items_fixed(self))

    def _batch(self, idxs: list[int]):
        """One batch (x, y) from the store, building missing items first; None when the store had to be dropped."""
        for i in idxs:
            if self._store is None or not self._store.filled[i]:
                if not self._put(i):
                    return None
        s = self._store
        assert s is not None
        index = torch.as_tensor(idxs, dtype=torch.long)
        return s.x[index].as_subclass(s.x_type), s.y[index].as_subclass(s.y_type)

    def _put(self, i: int) -> bool:
        """Build item i with the usual item transforms and store it; False (store dropped) when it cannot be."""
        item = self.do_item(i)
        if not _storable(item):
            return self._drop()
        x, y = item
        if self._store is None:
            n = len(self.dataset)
            if n * x.numel() * x.element_size() > budget_bytes():
                return self._drop()
            self._store = _Store(
                torch.empty((n, *x.shape), dtype=x.dtype),
                torch.empty(n, dtype=y.dtype),
                np.zeros(n, dtype=bool),
                type(x),
                type(y),
            )
        s = self._store
        if x.shape != s.x.shape[1:] or x.dtype != s.x.dtype or y.dtype != s.y.dtype:
            return self._drop()
        s.x[i] = x
        s.y[i] = y
        s.filled[i] = True
        return True

    def _drop(self) -> bool:
        """Stop storing for this loader (items of different shapes, too big, or not image + label)."""
        self._store, self._store_off = None, True
        return False


def _storable(item) -> bool:
    """An (image uint8 CxHxW, scalar integer label) pair."""
    if not (isinstance(item, tuple) and len(item) == 2):
        return False
    x, y = item
    return (
        isinstance(x, torch.Tensor)
        and x.dtype == torch.uint8
        and x.dim() == 3
        and isinstance(y, torch.Tensor)
        and y.dim() == 0
        and not y.is_floating_point()
    )


def items_fixed(dl) -> bool:
    """Whether the loader's item transforms give the same tensors every epoch (no random crop or placement)."""
    split = getattr(dl.dataset, "split_idx", None)
    for tfm in dl.after_item.fs:
        if isinstance(tfm, Resize):
            if tfm.method != ResizeMethod.Squish and split != 1:  # random position on the training side
                return False
        elif isinstance(tfm, RandTransform) and (tfm.split_idx is None or tfm.split_idx == split):
            return False
    return True


class MemoryDL(MemoryItemsMixin, TfmdDL):
    """TfmdDL with the in-memory item store."""


class MemoryWeightedDL(MemoryItemsMixin, WeightedDL):
    """WeightedDL (class-balanced sampling) with the in-memory item store."""
