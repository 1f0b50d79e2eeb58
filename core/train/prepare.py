"""Before a fit: the items table of a run (source, splits, checks), the decoder warmed, threads, environment."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.base import paths
from core.base.config import RunConfig, to_dict
from core.base.privacy import pseudonym
from core.base.version import version
from core.data.labels import trainable_reasons
from core.data.splits import assign_splits, group_leaks, split_summary, train_subset
from core.runs import rundir
from core.runs.progress import Progress
from core.train.learner import TrainingError

# ---------------------------------------------------------------- run tasks


def prepare(cfg: RunConfig, run_dir: Path, progress: Progress) -> pd.DataFrame:
    """Load the source, refuse untrainable data, assign splits; write config.json and items.csv."""
    from core.data.sources import load_source

    cfg.validate()
    run = rundir.RunFolder(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write(rundir.CONFIG, to_dict(cfg))
    progress.update(force=True, phase="scanning", message="reading the dataset")
    # every file, however long the table (XRT_PROBE_MAX bounds scans only): each must decode before training
    ds = load_source(cfg.source, decode=warm_decoder(cfg), every_file=True)
    reasons = trainable_reasons(ds, cfg.data.task.type, cfg.data.task.order)
    if reasons:
        raise TrainingError("training refused: " + "; ".join(reasons))
    items = assign_splits(_grouped_duplicates(ds.items, cfg, progress), cfg.data.split, cfg.data.task.type)
    items = train_subset(items, cfg.data.train_fraction, cfg.data.split.seed + 2)
    leaks = group_leaks(items)
    if leaks and cfg.data.split.method == "group":
        raise TrainingError(f"{len(leaks)} patient(s) ended up in two splits")
    snapshot = items[["relpath", "label", "split", "kind"]].copy()
    snapshot["group"] = [pseudonym(g) for g in items["group"].fillna("").astype(str)]
    snapshot.to_csv(run.items, index=False)
    ds.problems.to_csv(run.problems, index=False)
    run.write(
        rundir.SPLITS, split_summary(items, cfg.data.task.type, cfg.data.task.order).to_dict(orient="records")
    )
    return items


def _grouped_duplicates(items: pd.DataFrame, cfg: RunConfig, progress: Progress) -> pd.DataFrame:
    """With keep_duplicates: near-duplicate images merged into one group (so one split / fold); else unchanged."""
    if not cfg.data.split.keep_duplicates:
        return items
    from core.evaluation import checks

    progress.update(force=True, phase="scanning", message="finding near-duplicate images")
    feats = checks.image_features(items, size=cfg.data.img_size)
    dups = checks.find_duplicates(items, feats)
    progress.log(f"keep duplicates together: {len(dups)} near-duplicate pair(s) grouped")
    return checks.keep_duplicates_together(items, dups)


def warm_decoder(cfg: RunConfig):
    """The validating decode for `prepare`: decode as training will and keep it in the decode cache.

    Validation then doubles as the cache fill, so each file is decoded once per (size, window, frame), not
    once to validate and again in the first epoch; a later run on the same files validates from the cache.
    None (plain read_image) when the cache is off.
    """
    if not cfg.data.use_cache:
        return None
    from functools import partial

    from core.data.decode_cache import DecodeCache

    d = cfg.data
    return partial(DecodeCache().warm, size=d.img_size, window=d.window, frame=d.frame)


def resolve_threads(setting: int) -> tuple[int, str]:
    """(torch intra-op threads, where the number came from): the setting, $XRT_TORCH_THREADS, or every core given."""
    if setting > 0:
        return setting, "config"
    if (env := paths.env_int("XRT_TORCH_THREADS", 0)) > 0:
        return env, "XRT_TORCH_THREADS"
    return paths.cpu_cores(), "cores available to the process"


def apply_threads(cfg: RunConfig) -> None:
    """Let torch use the cores this run is given (recorded in env.json)."""
    n, _ = resolve_threads(cfg.train.torch_threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def env_info(cfg: RunConfig | None = None) -> dict[str, Any]:
    """This product's and the libraries' versions and the device, saved beside every run."""
    import fastai
    import PIL
    import pydicom
    import timm
    import torchvision

    return {
        "xray_trainer": version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "fastai": fastai.__version__,
        "timm": timm.__version__,
        "pydicom": pydicom.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "torch_threads_from": resolve_threads(cfg.train.torch_threads if cfg else 0)[1],
    }
