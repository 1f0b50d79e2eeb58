"""k-fold cross-validation cost: the app's kfold_run (decode cache reused across folds) vs k plain fastai runs.

Both sides train on the same folds (the app's own patient-grouped kfold_splits) with the same settings.
The app's time includes reading and validating the data set (its scan) and saving a model per fold.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import common as c
import numpy as np

TARGET = 2.0


def parse() -> Any:
    """Command-line options (sizes default to the CPU suite's)."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", default="large,small", help="comma list of large,small")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--large-n", type=int, default=30, help="large images used (of the generated set)")
    p.add_argument("--large-pool", type=int, default=60, help="size of the generated set (shared with bench_train)")
    p.add_argument("--large-size", type=int, default=2000)
    p.add_argument("--n-small", type=int, default=60, help="real chest X-rays used")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="epochs for the large data set")
    p.add_argument("--small-epochs", type=int, default=1)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--app-workers", type=int, default=0)
    p.add_argument("--plain-workers", type=int, default=-1)
    args = p.parse_args()
    if args.smoke:
        args.k, args.large_n, args.large_pool, args.large_size, args.n_small = 2, 8, 8, 128, 12
        args.img_size, args.bs, args.epochs, args.small_epochs, args.plain_workers = 32, 8, 1, 1, 0
    return args


def source_csv(name: str, args: Any, home: Path) -> tuple[Any, str]:
    """A CSV source (path, label, patient_id) for the data set, and a description."""
    from core.config import SourceConfig

    if name == "large":
        csv = c.large_csv(args.large_n, args.large_pool, args.large_size, args.seed)
        what = f"{args.large_n} generated {args.large_size}x{args.large_size} 16-bit PNGs"
        return SourceConfig(kind="csv", csv_path=str(csv), group_col="patient_id"), what
    items = c.chest_items(args.n_small, args.seed)
    csv = home / "chest-subset.csv"
    items.assign(patient_id=items["group"])[["relpath", "label", "patient_id"]].rename(
        columns={"relpath": "path"}).to_csv(csv, index=False)
    what = f"{len(items)} real chest X-ray JPEGs, 224x224"
    return SourceConfig(kind="csv", csv_path=str(csv), root=str(c.CHEST), group_col="patient_id"), what


def same_folds(cfg: Any) -> tuple[Any, list]:
    """The items and folds the app's kfold_run will use (same functions, same settings)."""
    from core.data import assign_splits, kfold_splits
    from core.sources import load_source

    items = assign_splits(load_source(cfg.source).items, cfg.data.split)
    s = cfg.data.split
    return items, kfold_splits(items, s.k_folds, method=s.method, seed=s.seed)


def app_side(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """The app's whole k-fold run (scan, folds, per-fold models, out-of-fold predictions)."""
    from core.jobs import Progress
    from core.train import kfold_run

    summary, seconds = c.timed(lambda: kfold_run(cfg, run_dir, Progress(run_dir)))
    mean = summary["metrics"]["mean_sd"]
    return {"seconds": seconds, "accuracy": mean["accuracy"]["mean"], "roc_auc": mean["roc_auc"]["mean"]}


def plain_side(items: Any, folds: list, spec: c.TrainSpec, home: Path) -> dict[str, Any]:
    """k independent plain fastai runs, one per fold (run in this process: no import cost per run)."""
    runs = []
    for i, (_, valid_idx) in enumerate(folds):
        layout = c.folder_layout(items, home / f"plain-fold{i}", valid_idx)
        runs.append(c.plain_script(layout, spec))
        c.log(f"plain fold {i + 1}/{len(folds)}: {runs[-1]['seconds']:.1f}s")
    return {"seconds": sum(r["seconds"] for r in runs), "accuracy": float(np.mean([r["accuracy"] for r in runs])),
            "roc_auc": float(np.nanmean([r["roc_auc"] for r in runs]))}


def run_dataset(name: str, args: Any, home: Path) -> dict[str, Any]:
    """Both sides on one data set; the speed-up is plain seconds / app seconds."""
    source, what = source_csv(name, args, home)
    epochs = args.epochs if name == "large" else args.small_epochs
    spec = c.TrainSpec(arch=args.arch, img_size=args.img_size, bs=args.bs, epochs=epochs, seed=args.seed,
                       app_workers=args.app_workers, plain_workers=args.plain_workers)
    cfg = c.run_config(spec, source)
    cfg.data.split.k_folds, cfg.data.split.seed = args.k, args.seed
    items, folds = same_folds(cfg)
    c.fresh_cache(home, f"kfold-{name}")
    c.log(f"{name}: app k-fold ({args.k} folds)")
    app = app_side(cfg, home / "runs" / f"kfold-{name}")
    c.log(f"{name}: app {app['seconds']:.1f}s; plain runs")
    t0 = time.perf_counter()
    plain = plain_side(items, folds, spec, home)
    plain["wall_s"] = time.perf_counter() - t0
    speedup = c.ratio(plain["seconds"], app["seconds"])
    return {"data": what, "k": args.k, "spec": c.spec_dict(spec), "app": app, "plain": plain,
            "speedup_app_vs_plain": speedup, "target": TARGET, "target_met": speedup >= TARGET}


def main() -> None:
    """Run the chosen data sets and print the JSON line."""
    args = parse()
    c.setup(args)
    c.warmup()
    names = [s.strip() for s in args.datasets.split(",") if s.strip()]
    result: dict[str, Any] = {"benchmark": "kfold", "smoke": args.smoke, "machine": c.machine(), "datasets": {}}
    with c.app_home() as home:
        for name in names:
            result["datasets"][name] = run_dataset(name, args, home)
    result["machine_after"] = {"load_avg": c.machine()["load_avg"]}
    result["notes"] = ["app time = core.train.kfold_run end to end (scan+validate, k fits, k saved models, OOF)",
                       "plain time = sum of k in-process runs of from_folder + vision_learner + fit_one_cycle",
                       "accuracy/roc_auc = mean over folds"]
    c.emit(result)


if __name__ == "__main__":
    main()
