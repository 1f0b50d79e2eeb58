"""The training step's overhead: the app's epochs against raw PyTorch epochs, interleaved in one process.

The app side is `train --root <folders> --no-pretrained` (the planned schedule, `--epochs`/`--bs` override it) run
through `core.train.fit.fit_one`; after each of its epochs, a callback runs one epoch of each raw loop
(`bench_defaults.RawLoop`: the same model, image size, batch size, train/valid counts and threads, on tensors already
in memory; fused AdamW = the ceiling, and torch's per-parameter AdamW loop for reference), so load changes on a shared
machine hit both sides alike (A B A B). Reports each epoch's seconds and, after the first epoch (decoding, first
allocations), the median over epochs of raw seconds / app seconds: the app's throughput as a fraction of the raw loop.
Prints one JSON line.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_defaults as bd
import common as c
import numpy as np


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", default="pneumonia", help="one of " + ",".join(bd.PLAIN))
    p.add_argument("--pneumonia-n", default="240,80,160", help="train,val,test counts of PneumoniaMNIST")
    p.add_argument(
        "--epochs", type=int, default=5, help="app epochs (each followed by one epoch of each raw loop)"
    )
    p.add_argument("--bs", type=int, default=0, help="batch size (0: the planned one)")
    return p.parse_args()


def app_run(root: Path, args: Any, home: Path):
    """(config, items, classes, run folder, progress) of the app's run on `root`, prepared, before its fit."""
    from core import cli
    from core.runs.progress import Progress
    from core.train import taskrun
    from core.train.prepare import prepare

    argv = [
        "train",
        "--root",
        str(root),
        "--no-pretrained",
        "--seed",
        str(args.seed),
        "--epochs",
        str(args.epochs),
    ]
    cfg = cli.run_config(cli.build_parser().parse_args(argv + (["--bs", str(args.bs)] if args.bs else [])))
    run_dir = home / "run"
    progress = Progress(run_dir)
    items = prepare(cfg, run_dir, progress)
    return cfg, items, taskrun.run_classes(items, cfg), run_dir, progress


def interleaved(root: Path, args: Any, home: Path) -> dict[str, Any]:
    """The app's fit with one epoch of each raw loop after each of its epochs; seconds per epoch of each side."""
    from fastai.callback.core import Callback

    from core.train.fit import fit_one

    cfg, items, classes, run_dir, progress = app_run(root, args, home)
    n = items["split"].value_counts().to_dict()
    shape = (cfg.data.img_size, cfg.data.batch_size, n.get("train", 0), n.get("valid", 0), len(classes))
    raws = {"fused": bd.RawLoop(*shape, fused=True), "loop": bd.RawLoop(*shape, fused=False)}
    seconds: dict[str, list[float]] = {"app": [], "fused": [], "loop": []}

    class Interleave(Callback):
        order = 99  # after every callback of the app's epoch (history, checkpoint, resume state, progress)

        def before_epoch(self):
            self.t0 = time.perf_counter()

        def after_epoch(self):
            seconds["app"].append(time.perf_counter() - self.t0)
            for name, raw in raws.items():
                seconds[name].append(raw.epoch_seconds())

    fit_one(items, cfg, run_dir, progress, classes=classes, extra_cbs=[Interleave()])
    app = np.array(seconds["app"][1:])
    ratios = {
        f"vs_raw_{k}": float(np.median(np.array(v[1:]) / app)) for k, v in seconds.items() if k != "app"
    }
    plan = {"img_size": cfg.data.img_size, "batch_size": cfg.data.batch_size, "epochs": cfg.train.epochs}
    return {"plan": plan, "items": n, "epoch_s": seconds, "throughput_after_epoch_1": ratios}


def main() -> None:
    """One data set, one JSON line."""
    args = parse()
    if args.smoke:
        args.epochs = 2
    c.setup(args)
    if args.threads:
        os.environ["XRT_TORCH_THREADS"] = str(args.threads)
    root, _ = bd.folder_dataset(args.dataset, args.smoke, args.pneumonia_n)
    with c.app_home("xrt-overhead-") as home:
        result = interleaved(root, args, Path(tempfile.mkdtemp(dir=home)))
    c.emit(
        {
            "benchmark": "overhead",
            "dataset": args.dataset,
            "smoke": args.smoke,
            **result,
            "machine": c.machine(),
        }
    )


if __name__ == "__main__":
    main()
