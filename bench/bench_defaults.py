"""The defaults benchmark: the app with no options but the source (and --no-pretrained) vs a plain fastai script.

App side = what `python -m core train --root <folder> --no-pretrained` runs: `core.cli.run_config` (the split from the
folder's own train/valid/test sub-folders, the schedule planned from the data by `core.base.plan`) and the training job
(`core.runs.jobs.run_inline`), timed from planning to the saved model. Plain side = the notebook a user writes, 10
epochs of `fit_one_cycle` at a sensible size (the table below) on the same folders (`bench_parity.plain_run`).
Also, per data set: the training's end-to-end images/s after the first epoch as a fraction of a raw PyTorch loop on
tensors already in memory (same model, size, batch size and threads: the ceiling), and prediction from files
(`Predictor.predict_paths`) as a fraction of the same model on decoded tensors, on 1 and on 2 threads.

Prints one JSON line per data set: test ACC / AUC (mean, sd over seeds), seconds, one-class warnings, the plan.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import bench_parity as bp
import common as c
import numpy as np
import pandas as pd

PLAIN = {  # data set -> the plain script's sensible size and batch size (10 epochs, lr 3e-3)
    "pneumonia": dict(img_size=32, bs=64),
    "chest": dict(img_size=128, bs=32),
    "knee": dict(img_size=128, bs=32),
    "sample": dict(img_size=128, bs=16),
}
SMOKE = dict(img_size=32, bs=8)
TARGET_AUC = -0.02  # the default's test AUC >= plain - 0.02


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument(
        "--datasets", default="pneumonia,chest,knee,sample", help="comma list of " + ",".join(PLAIN)
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per side (seed, seed+1, ...)")
    p.add_argument("--plain-epochs", type=int, default=10)
    p.add_argument("--pneumonia-n", default="", help="train,val,test counts of PneumoniaMNIST (default: all)")
    p.add_argument("--sides", default="app,plain", help="comma list of app, plain")
    p.add_argument(
        "--app-args",
        default="",
        help='extra `train` options for the app side, e.g. "--bs 16" (default: none, the planned schedule)',
    )
    p.add_argument("--no-predict", action="store_true", help="skip the prediction throughput")
    p.add_argument("--no-raw", action="store_true", help="skip the raw training loop")
    p.add_argument(
        "--lr-find",
        action="store_true",
        help="also run the LR finder at the defaults (30 steps) per seed: fastai's valley, the curve's drop, verdict",
    )
    args = p.parse_args()
    args.arch, args.lr, args.plain_workers = "resnet18", 3e-3, -1
    return args


# ---------------------------------------------------------------- data: train/valid/test class folders


def hardlinked(items: pd.DataFrame, dest: Path) -> Path:
    """dest/{train,valid,test}/<label>/<file> as hard links (copies across devices): a folder the app scans."""
    if (dest / ".done").is_file():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    for i, (path, label, split) in enumerate(zip(items["path"], items["label"], items["split"])):
        out = dest / str(split) / str(label) / f"{i:05d}{Path(path).suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, out)
        except OSError:
            shutil.copy(path, out)
    (dest / ".done").write_text("ok")
    return dest


def folder_dataset(name: str, smoke: bool, pneumonia_n: str) -> tuple[Path, str]:
    """(a train/valid|val/test class-folder layout, its validation folder's name) of one data set."""
    if name == "pneumonia":
        n = tuple(int(x) for x in pneumonia_n.split(",")) if pneumonia_n else None
        return bp.pneumonia_folders((24, 12, 12) if smoke else n), "val"  # type: ignore[arg-type]
    if name == "knee":
        root = c.require(c.SHARED / "knee_kl_oai224", "knee_kl_oai224")
        table = pd.read_csv(root / "labels.csv").rename(columns={"kl_grade": "label"})
    elif name == "chest":
        root = c.require(c.CHEST, "chest_xray_224")
        table = pd.read_csv(root / "labels.csv")
    else:
        from core.data.sample import ensure_sample

        root = ensure_sample(c.DATA_CACHE / "sample")
        table = pd.read_csv(root / "labels.csv")
    table = table[["path", "label", "patient_id"]].astype({"label": str})
    split = bp.table_split(table, root, 60 if smoke else None)
    tag = "smoke" if smoke else "all"
    return hardlinked(split, c.DATA_CACHE / f"defaults-{name}-{tag}-v1"), "valid"


# ---------------------------------------------------------------- the two sides


def app_default(root: Path, seed: int, run_dir: Path, extra: str = "") -> dict[str, Any]:
    """`train --root <root> --no-pretrained` (plus the seed and `extra` options): planned, trained, tested."""
    from core import cli
    from core.base.config import to_dict
    from core.runs.jobs import run_inline
    from core.runs.rundir import RunFolder

    t0 = time.perf_counter()
    argv = ["train", "--root", str(root), "--no-pretrained", "--seed", str(seed), *extra.split()]
    cfg = cli.run_config(cli.build_parser().parse_args(argv))
    summary = run_inline("train", {"config": to_dict(cfg)}, run_dir=run_dir)
    seconds = time.perf_counter() - t0
    hist = RunFolder(run_dir).read_history()
    test = summary["metrics"]["test"]
    return {
        "seconds": seconds,
        "accuracy": test["accuracy"],
        "roc_auc": test["roc_auc"],
        "warned": bool(summary.get("warnings")),  # one class, a class missed, or chance-level AUC
        "one_class": any("predicts one class" in w for w in summary.get("warnings", [])),
        "chance": any("about chance" in w for w in summary.get("warnings", [])),
        "plan": {
            "img_size": cfg.data.img_size,
            "batch_size": cfg.data.batch_size,
            "epochs": cfg.train.epochs,
        },
        "split": cfg.data.split.method,
        "epoch_s": list(np.diff([0.0, *hist["time_s"]])),
    }


def plain(root: Path, valid: str, name: str, args: Any, seed: int) -> dict[str, Any]:
    """The plain fastai script, 10 epochs at the data set's sensible size, on the same folders."""
    size = {**(SMOKE if args.smoke else PLAIN[name]), "epochs": 1 if args.smoke else args.plain_epochs}
    return bp.plain_run({"plain": root, "valid": valid}, size, args, seed)


# ---------------------------------------------------------------- ceilings: raw training loop, model on tensors


class RawLoop:
    """A raw PyTorch training epoch (train steps + a validation pass) on random tensors already in memory: the app's
    model, image size, batch size and class count, and the fastest optimiser torch has for it (AdamW, fused kernel;
    `fused=False`: its per-parameter loop, as before the app used the fused kernel)."""

    def __init__(
        self, img_size: int, bs: int, n_train: int, n_valid: int, n_classes: int, fused: bool = True
    ):
        import torch

        from core.models import archs

        self.model = archs.create_model("resnet18", n_classes, 3)
        self.opt = torch.optim.AdamW(self.model.parameters(), 1e-3, fused=fused or None)
        self.x, self.y = torch.randn(bs, 3, img_size, img_size), torch.randint(0, n_classes, (bs,))
        self.steps, self.evals = max(1, n_train // bs), max(1, -(-n_valid // bs))

    def epoch_seconds(self) -> float:
        """Seconds of one epoch."""
        import torch

        t0 = time.perf_counter()
        self.model.train()
        for _ in range(self.steps):
            self.opt.zero_grad()
            torch.nn.functional.cross_entropy(self.model(self.x), self.y).backward()
            self.opt.step()
        self.model.eval()
        with torch.no_grad():
            for _ in range(self.evals):
                self.model(self.x)
        return time.perf_counter() - t0

    def images_per_s(self) -> float:
        """Training images per second of one epoch (its validation pass included in the time, as the app's is)."""
        return self.steps * self.x.shape[0] / self.epoch_seconds()


def raw_loop_images_per_s(img_size: int, bs: int, n_train: int, n_valid: int, n_classes: int) -> float:
    """Images/s of a raw PyTorch epoch (train steps + a validation pass) on random tensors already in memory."""
    return RawLoop(img_size, bs, n_train, n_valid, n_classes).images_per_s()


def predict_ratio(model_dir: Path, paths: list[str], threads: int) -> dict[str, float]:
    """Prediction from files vs the same model on tensors decoded beforehand, images/s, at `threads` threads
    (bench_predict.files_vs_tensors in this process; bench_predict.py also pins the process to that many cores)."""
    import bench_predict
    import torch

    from core.evaluation.predict import Predictor

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = bench_predict.files_vs_tensors(Predictor(model_dir, device="cpu"), paths, 32, rounds=2)
    finally:
        torch.set_num_threads(old)
    return {k: out[k] for k in ("files_images_per_s", "tensors_images_per_s", "ratio")}


# ---------------------------------------------------------------- one data set


def run_dataset(name: str, args: Any, home: Path) -> dict[str, Any]:
    """Every side x seed on one data set, then the ceilings measured on the last app run."""
    root, valid = folder_dataset(name, args.smoke, args.pneumonia_n)
    counts = {p.name: sum(1 for f in p.rglob("*") if f.is_file()) for p in root.iterdir() if p.is_dir()}
    sides = [s for s in args.sides.split(",") if s]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    last_app: Path | None = None
    for k in range(args.seeds):
        seed = args.seed + k
        for side in sides[k % len(sides) :] + sides[: k % len(sides)]:
            c.log(f"{name}: seed {seed}: {side}")
            run_dir = home / "runs" / f"{name}-{side}-{seed}"
            if side == "app":
                c.fresh_cache(home, f"{name}-{seed}")
                r, last_app = app_default(root, seed, run_dir, args.app_args), run_dir
            else:
                r = plain(root, valid, name, args, seed)
            runs[side].append({**r, "seed": seed})
            c.log(
                f"{name}: {side} seed {seed}: {r['seconds']:.1f}s acc={r['accuracy']:.3f} auc={r['roc_auc']:.3f}"
            )
            c.free_memory()
    out: dict[str, Any] = {"benchmark": "defaults", "dataset": name, "smoke": args.smoke, "folders": counts}
    out["sides"] = {s: summarize(rs) for s, rs in runs.items()}
    if {"app", "plain"} <= set(runs):
        a, p = out["sides"]["app"], out["sides"]["plain"]
        out["vs_plain"] = {
            "auc_diff": a["roc_auc"]["mean"] - p["roc_auc"]["mean"],
            "acc_diff": a["accuracy"]["mean"] - p["accuracy"]["mean"],
            "time_ratio_plain_over_app": c.ratio(p["seconds"]["mean"], a["seconds"]["mean"]),
        }
        out["targets_met"] = {
            "auc_within_0.02": out["vs_plain"]["auc_diff"] >= TARGET_AUC,
            "no_slower": out["vs_plain"]["time_ratio_plain_over_app"] >= 1.0,
            "no_one_class_model": not any(r["one_class"] for r in runs["app"]),
            "no_chance_model": not any(r["chance"] for r in runs["app"]),
        }
    if last_app is not None:
        out.update(ceilings(root, last_app, runs["app"][-1], args))
    if args.lr_find:
        out["lr_find"] = [
            lr_curve(root, args.seed + k, home / "runs" / f"{name}-lr-{k}") for k in range(args.seeds)
        ]
    return out


def lr_curve(root: Path, seed: int, run_dir: Path) -> dict[str, Any]:
    """`lr-find --root <root> --no-pretrained --num-it 30`: fastai's valley, how far the loss fell, the verdict."""
    from core import cli
    from core.base.config import to_dict
    from core.runs.jobs import run_inline
    from core.runs.rundir import RunFolder

    ns = cli.build_parser().parse_args(
        ["lr-find", "--root", str(root), "--no-pretrained", "--seed", str(seed)]
    )
    cfg = cli.run_config(ns)
    res = run_inline("lr_find", {"config": to_dict(cfg), "num_it": 30}, run_dir=run_dir)
    y = np.asarray(RunFolder(run_dir).read_lr_find()["losses"], dtype=float)
    y = y[np.isfinite(y)]
    start = float(np.median(y[: max(3, len(y) // 3)]))
    return {
        "seed": seed,
        "valley": res["suggestions"].get("valley"),
        "drop": (start - float(y.min())) / start,
        "verdict": res["verdict"],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd of ACC, AUC and seconds of one side, and its runs."""
    return {**{k: bp.mean_sd([r[k] for r in runs]) for k in ("accuracy", "roc_auc", "seconds")}, "runs": runs}


def ceilings(root: Path, run_dir: Path, app: dict[str, Any], args: Any) -> dict[str, Any]:
    """Training images/s after the first epoch vs a raw loop; prediction from files vs on tensors."""
    from core.runs.rundir import RunFolder

    items = RunFolder(run_dir).read_items()
    n = items["split"].value_counts().to_dict()
    out: dict[str, Any] = {}
    if not args.no_raw and len(app["epoch_s"]) > 1:
        plan = app["plan"]
        epoch_s = float(np.median(app["epoch_s"][1:]))
        app_ips = n.get("train", 0) // plan["batch_size"] * plan["batch_size"] / epoch_s
        raw = raw_loop_images_per_s(
            plan["img_size"],
            plan["batch_size"],
            n.get("train", 0),
            n.get("valid", 0),
            items["label"].nunique(),
        )
        out["training"] = {
            "app_images_per_s": app_ips,
            "raw_images_per_s": raw,
            "ratio": c.ratio(app_ips, raw),
        }
    if not args.no_predict:
        paths = [str(p) for p in sorted((root / "test").rglob("*")) if p.is_file()]
        out["predict"] = {
            f"{t}_threads": predict_ratio(RunFolder(run_dir).model_dir, paths, t) for t in (1, 2)
        }
    return out


def main() -> None:
    """Run the chosen data sets; print one JSON line per data set."""
    args = parse()
    if args.smoke:
        args.seeds = 1
    c.setup(args)
    if args.threads:  # the app's runs use every core unless told (no option: "nothing but the source")
        os.environ["XRT_TORCH_THREADS"] = str(args.threads)
    c.warmup()
    with c.app_home("xrt-defaults-") as home:
        for name in [s.strip() for s in args.datasets.split(",") if s.strip()]:
            t0 = time.perf_counter()
            result = run_dataset(name, args, home)
            result.update(machine=c.machine(), wall_s=time.perf_counter() - t0)
            c.emit(result)


if __name__ == "__main__":
    main()
