"""Previews for the training setup: augmented training samples and the split a config would make.

The augmentation preview runs a few items through the very DataBlock training uses
(`core.data.loaders.make_datablock`: reader, Resize, `batch_transforms`), without Normalize, on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.base.config import DataConfig, SplitConfig, TaskConfig
from core.data.loaders import make_datablock
from core.data.sites import site_folds, site_values
from core.data.splits import assign_splits, group_leaks, kfold_splits, label_counts, split_summary


def preview_augmentations(
    items: pd.DataFrame, data_cfg: DataConfig, n: int = 8, seed: int = 0
) -> list[np.ndarray]:
    """`n` augmented training samples (uint8 HxWxC, C = 1 grey or 3 RGB) made by the training transforms."""
    import torch
    from fastai.torch_core import set_seed

    data_cfg.validate()
    if items.empty or n < 1:
        return []
    rows = items.sample(n=n, replace=len(items) < n, random_state=seed).reset_index(drop=True)
    classes = sorted(rows["label"].astype(str).unique())
    block = make_datablock(classes, data_cfg, valid_idx=[], stats=None)
    dls = block.dataloaders(rows, bs=n, num_workers=0, device=torch.device("cpu"))
    loader = dls.train.new(shuffle=False, drop_last=False)
    set_seed(seed, reproducible=True)
    xb = next(iter(loader))[0].as_subclass(torch.Tensor)
    arr = (xb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [a for a in arr]


def split_preview(
    items: pd.DataFrame, split_cfg: SplitConfig, task: TaskConfig | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Counts per class (per finding / grade by task type) and patients per split, and the patients found in more
    than one split; the split made as training makes it for the task.

    With k-fold cross-validation the folds rotate over all non-test items: train and valid are one row
    ("k folds"), and only a patient shared with the test part is a leak.
    """
    task = task or TaskConfig()
    assigned = assign_splits(items, split_cfg, task.type)
    if split_cfg.k_folds < 2:
        return split_summary(assigned, task.type, task.order), group_leaks(assigned)
    assigned["split"] = assigned["split"].where(assigned["split"] == "test", "train")
    summary = split_summary(assigned, task.type, task.order)
    summary["split"] = summary["split"].replace(
        {"train": f"{split_cfg.k_folds} folds (train + valid in turn)"}
    )
    return summary, group_leaks(assigned)


def fold_preview(items: pd.DataFrame, split_cfg: SplitConfig, task: TaskConfig | None = None) -> pd.DataFrame:
    """One row per cross-validation fold (leave one site out: per site): validation items per class (per finding /
    grade by task type) and patients; SplitError with the reason when the folds cannot be made."""
    task = task or TaskConfig()
    assigned = assign_splits(items, split_cfg, task.type)
    names: list[str] = []
    if split_cfg.method == "loso":
        folds, names = site_folds(assigned, site_values(assigned, split_cfg.site_col))
    else:
        folds = kfold_splits(
            assigned, split_cfg.k_folds, method=split_cfg.method, seed=split_cfg.seed, task=task.type
        )
    classes = list(label_counts(assigned["label"], task.type, task.order))
    rows = []
    for i, (_, valid_idx) in enumerate(folds):
        part = assigned.iloc[valid_idx]
        counts = label_counts(part["label"], task.type, task.order)
        groups = part["group"].fillna("").astype(str) if "group" in part else pd.Series([], dtype=str)
        row: dict[str, Any] = {"fold": i + 1, **({"site": names[i]} if names else {})}
        rows.append(
            {
                **row,
                "valid items": len(part),
                **{c: int(counts.get(c, 0)) for c in classes},
                "patients": int(groups[groups != ""].nunique()),
            }
        )
    return pd.DataFrame(rows)
