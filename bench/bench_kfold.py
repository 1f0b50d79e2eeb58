"""k-fold cross-validation cost: the app's kfold_run (decode cache reused across folds) vs k plain fastai runs.

Both sides train on the same folds (the app's own patient-grouped kfold_splits) with the same settings.
The app's time includes reading and validating the data set (its scan) and saving a model per fold.

Two ways of counting, both reported:
- in process: both sides in this process after a warm-up (no import costs): the training work alone;
- separate runs (--separate, default on): how a user meets them. The app's k-fold is one job process; "k
  independent plain runs" are k script runs. Every run here is a fresh `python` child (interpreter start,
  torch/fastai imports, its own work) timed from spawn to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
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
    p.add_argument(
        "--large-pool", type=int, default=60, help="size of the generated set (shared with bench_train)"
    )
    p.add_argument("--large-size", type=int, default=2000)
    p.add_argument("--n-small", type=int, default=60, help="real chest X-rays used")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="epochs for the large data set")
    p.add_argument("--small-epochs", type=int, default=1)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--app-workers", type=int, default=0)
    p.add_argument("--plain-workers", type=int, default=-1)
    p.add_argument("--separate", type=int, default=1, help="1: also time each side as separate python runs")
    p.add_argument("--child", choices=("app", "plain"), help=argparse.SUPPRESS)
    p.add_argument("--child-input", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.smoke:
        args.k, args.large_n, args.large_pool, args.large_size, args.n_small = 2, 8, 8, 128, 12
        args.img_size, args.bs, args.epochs, args.small_epochs, args.plain_workers = 32, 8, 1, 1, 0
    return args


def source_csv(name: str, args: Any, home: Path) -> tuple[Any, str]:
    """A CSV source (path, label, patient_id) for the data set, and a description."""
    from core.base.config import SourceConfig

    if name == "large":
        csv = c.large_csv(args.large_n, args.large_pool, args.large_size, args.seed)
        what = f"{args.large_n} generated {args.large_size}x{args.large_size} 16-bit PNGs"
        return SourceConfig(kind="csv", csv_path=str(csv), group_col="patient_id"), what
    items = c.chest_items(args.n_small, args.seed)
    csv = home / "chest-subset.csv"
    items.assign(patient_id=items["group"])[["relpath", "label", "patient_id"]].rename(
        columns={"relpath": "path"}
    ).to_csv(csv, index=False)
    what = f"{len(items)} real chest X-ray JPEGs, 224x224"
    return SourceConfig(kind="csv", csv_path=str(csv), root=str(c.CHEST), group_col="patient_id"), what


def same_folds(cfg: Any) -> tuple[Any, list]:
    """The items and folds the app's kfold_run will use (same functions, same settings)."""
    from core.data.sources import load_source
    from core.data.splits import assign_splits, kfold_splits

    items = assign_splits(load_source(cfg.source).items, cfg.data.split)
    s = cfg.data.split
    return items, kfold_splits(items, s.k_folds, method=s.method, seed=s.seed)


def app_side(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """The app's whole k-fold run (scan, folds, per-fold models, out-of-fold predictions)."""
    from core.runs.progress import Progress
    from core.train.kfold import kfold_run

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
    return {
        "seconds": sum(r["seconds"] for r in runs),
        "accuracy": float(np.mean([r["accuracy"] for r in runs])),
        "roc_auc": float(np.nanmean([r["roc_auc"] for r in runs])),
    }


def child_main(args: Any) -> None:
    """One separate run (in a fresh interpreter): the app's whole k-fold, or one plain fold."""
    spec_in = json.loads(Path(args.child_input).read_text())
    if args.child == "app":
        from core.base.config import RunConfig, from_dict

        result = app_side(from_dict(RunConfig, spec_in["config"]), Path(spec_in["run_dir"]))
    else:
        result = c.plain_script(Path(spec_in["layout"]), c.TrainSpec(**spec_in["spec"]))
    c.emit({"accuracy": result["accuracy"], "roc_auc": result["roc_auc"]})


def child_run(kind: str, payload: dict[str, Any], home: Path, tag: str) -> float:
    """Wall seconds of `python bench_kfold.py --child kind` from spawn to exit (imports included)."""
    spec_file = home / f"child-{tag}.json"
    spec_file.write_text(json.dumps(payload))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-input", str(spec_file)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"child {kind} run failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def separate_runs(
    cfg: Any, items: Any, folds: list, spec: c.TrainSpec, home: Path, name: str
) -> dict[str, Any]:
    """The app's k-fold as one fresh process (cold cache) vs k fresh plain processes, one per fold."""
    from core.base.config import to_dict

    c.fresh_cache(home, f"kfold-{name}-separate")
    app_s = child_run(
        "app",
        {"config": to_dict(cfg), "run_dir": str(home / "runs" / f"kfold-{name}-sep")},
        home,
        f"{name}-app",
    )
    c.log(f"{name}: app as one separate run {app_s:.1f}s")
    plain_s = []
    for i, (_, valid_idx) in enumerate(folds):
        layout = c.folder_layout(items, home / f"plain-fold{i}", valid_idx)
        plain_s.append(
            child_run("plain", {"layout": str(layout), "spec": asdict(spec)}, home, f"{name}-plain{i}")
        )
        c.log(f"{name}: plain run {i + 1}/{len(folds)} {plain_s[-1]:.1f}s")
    speedup = c.ratio(sum(plain_s), app_s)
    return {
        "app_seconds": app_s,
        "plain_seconds": sum(plain_s),
        "plain_each_s": plain_s,
        "speedup_app_vs_plain": speedup,
        "target_met": speedup >= TARGET,
    }


def run_dataset(name: str, args: Any, home: Path) -> dict[str, Any]:
    """Both sides on one data set; the speed-up is plain seconds / app seconds."""
    source, what = source_csv(name, args, home)
    epochs = args.epochs if name == "large" else args.small_epochs
    spec = c.TrainSpec(
        arch=args.arch,
        img_size=args.img_size,
        bs=args.bs,
        epochs=epochs,
        seed=args.seed,
        app_workers=args.app_workers,
        plain_workers=args.plain_workers,
    )
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
    out = {
        "data": what,
        "k": args.k,
        "spec": c.spec_dict(spec),
        "app": app,
        "plain": plain,
        "speedup_app_vs_plain": speedup,
        "target": TARGET,
        "target_met": speedup >= TARGET,
    }
    if args.separate:
        out["separate_runs"] = separate_runs(cfg, items, folds, spec, home, name)
    return out


def main() -> None:
    """Run the chosen data sets and print the JSON line."""
    args = parse()
    c.setup(args)
    if args.child:
        child_main(args)
        return
    c.warmup()
    names = [s.strip() for s in args.datasets.split(",") if s.strip()]
    result: dict[str, Any] = {
        "benchmark": "kfold",
        "smoke": args.smoke,
        "machine": c.machine(),
        "datasets": {},
    }
    with c.app_home() as home:
        for name in names:
            result["datasets"][name] = run_dataset(name, args, home)
    result["machine_after"] = {"load_avg": c.machine()["load_avg"]}
    result["notes"] = [
        "app time = core.train.kfold.kfold_run end to end (scan+validate, k fits, k saved models, OOF)",
        "plain time = sum of k in-process runs of from_folder + vision_learner + fit_one_cycle",
        "separate_runs = the same work as fresh python processes (app: 1, plain: k), imports included",
        "accuracy/roc_auc = mean over folds",
    ]
    c.emit(result)


if __name__ == "__main__":
    main()
