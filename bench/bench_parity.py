"""Parity on held-out test sets: the app's training job vs a plain fastai notebook, same split, N seeds.

App side = the job path the CLI and the UI use (`core.runs.jobs.run_inline("train", ...)` -> `core.train.run.train_run`:
scan + validate, DataLoaders, fit, predictions, saved model) with the app's DEFAULTS apart from what both
sides share: resnet18 from scratch, image size, batch size, epochs, lr, seed. Plain side = the notebook a
user writes: `ImageDataLoaders.from_folder(item_tfms=Resize(size), batch_tfms=aug_transforms())`,
`vision_learner(resnet18, pretrained=False, metrics=accuracy)`, `fit_one_cycle(epochs, lr)`, last epoch.

Prints one JSON line per data set: test ACC / AUC mean and sd per side, the differences, and the time
ratio plain_seconds / app_seconds (> 1: the app is faster). `--variant NAME:key=value,...` adds app runs with
other settings (an ablation), e.g. `--variant cl_off:train.channels_last=off`.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import common as c
import numpy as np
import pandas as pd

PNEUMONIA = c.SHARED / "pneumoniamnist" / "pneumoniamnist.npz"
PNEU_CLASSES = ("normal", "pneumonia")  # label 0, 1
TARGET_DIFF = -0.01  # test ACC and AUC >= plain - 0.01

SIZES: dict[str, dict[str, dict[str, Any]]] = {  # data set -> size -> settings
    "pneumonia": {
        "full": dict(n=None, img_size=64, bs=64, epochs=8),
        "medium": dict(n=(800, 270, 468), img_size=64, bs=64, epochs=8),
        "small": dict(n=(240, 80, 160), img_size=64, bs=64, epochs=2),
        "smoke": dict(n=(24, 12, 12), img_size=32, bs=8, epochs=1),
    },
    "chest": {
        "full": dict(n=None, img_size=128, bs=32, epochs=8),
        "medium": dict(n=None, img_size=64, bs=32, epochs=8),
        "small": dict(n=160, img_size=64, bs=32, epochs=2),
        "smoke": dict(n=24, img_size=32, bs=8, epochs=1),
    },
    "sample": {
        "full": dict(n=None, img_size=64, bs=16, epochs=8),
        "medium": dict(n=None, img_size=64, bs=16, epochs=8),
        "small": dict(n=None, img_size=64, bs=16, epochs=3),
        "smoke": dict(n=None, img_size=32, bs=8, epochs=1),
    },
}


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument(
        "--datasets", default="pneumonia,chest,sample", help="comma list of pneumonia,chest,sample"
    )
    p.add_argument(
        "--full", action="store_true", help="the real sizes (PneumoniaMNIST 64 px / 8 epochs, ...)"
    )
    p.add_argument(
        "--medium",
        action="store_true",
        help="full epochs and image sizes on less data (PneumoniaMNIST 800 training images, chest at 64 px)",
    )
    p.add_argument("--seeds", type=int, default=3, help="training seeds per side (seed, seed+1, ...)")
    p.add_argument("--epochs", type=int, default=0, help="override the size's epochs")
    p.add_argument("--img-size", type=int, default=0, help="override the size's image size")
    p.add_argument("--lr", type=float, default=3e-3, help="both sides (the app's from-scratch default)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--sides", default="app,plain", help="comma list of app, plain and variant names")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:key=value,... an app run with other settings (dotted RunConfig keys)",
    )
    p.add_argument("--plain-workers", type=int, default=-1, help="-1: fastai's default")
    p.add_argument("--keep", default="", help="keep run folders under this folder (default: temporary)")
    args = p.parse_args()
    args.size = "smoke" if args.smoke else ("full" if args.full else ("medium" if args.medium else "small"))
    return args


# ---------------------------------------------------------------- data sets


def pneumonia_folders(n: tuple[int, int, int] | None) -> Path:
    """PneumoniaMNIST written once as PNG train/val/test/<class>/ folders (first n per split, class-balanced)."""
    tag = "all" if n is None else "-".join(map(str, n))
    root = c.DATA_CACHE / f"pneumoniamnist-png-v1-{tag}"
    if (root / ".done").is_file():
        return root
    from PIL import Image

    data = np.load(c.require(PNEUMONIA, "pneumoniamnist.npz"))
    shutil.rmtree(root, ignore_errors=True)
    for k, part in enumerate(("train", "val", "test")):
        imgs, labels = data[f"{part}_images"], data[f"{part}_labels"].reshape(-1)
        keep = np.arange(len(labels)) if n is None else _balanced(labels, n[k])
        for i in keep:
            out = root / part / PNEU_CLASSES[int(labels[i])] / f"{part}{i:05d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(imgs[i]).save(out)
    (root / ".done").write_text("ok")
    return root


def _balanced(labels: np.ndarray, n: int) -> np.ndarray:
    """The first n // classes indices of each class, sorted."""
    per = n // len(np.unique(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == v)[:per] for v in np.unique(labels)]))


def table_split(table: pd.DataFrame, root: Path, n: int | None, seed: int = 42) -> pd.DataFrame:
    """A class-balanced subset of (path, label, patient_id) with the app's patient split, 20 % valid + 20 % test."""
    from core.base.config import SplitConfig
    from core.data.splits import assign_splits
    from core.data.tables import from_df

    if n and n < len(table):
        rng = np.random.default_rng(seed)
        per = n // table["label"].nunique()
        keep = [
            rng.choice(ix, min(per, len(ix)), replace=False) for ix in table.groupby("label").indices.values()
        ]
        table = table.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)
    items = from_df(table, root, group_col="patient_id").items
    split = assign_splits(items, SplitConfig(method="group", valid_pct=0.2, test_pct=0.2, seed=seed))
    split["relpath"] = [str(Path(p).resolve().relative_to(root.resolve())) for p in split["path"]]
    return split


def dataset(name: str, size: dict[str, Any], home: Path) -> dict[str, Any]:
    """(app source settings, plain folder, description) of one data set at one size."""
    if name == "pneumonia":
        root = pneumonia_folders(size["n"])
        counts = {p: sum(1 for _ in (root / p).rglob("*.png")) for p in ("train", "val", "test")}
        return {
            "source": {"kind": "folder", "root": str(root)},
            "split": "folder",
            "plain": root,
            "valid": "val",
            "what": f"PneumoniaMNIST 28 px grey PNGs, its own train/val/test {counts}",
        }
    if name == "chest":
        root = c.require(c.CHEST, "chest_xray_224")
        table = pd.read_csv(root / "labels.csv")
        what = "chest_xray_224 real JPEGs, patient split 60/20/20"
    else:
        from core.data.sample import ensure_sample

        root = ensure_sample(c.DATA_CACHE / "sample")
        table = pd.read_csv(root / "labels.csv")
        what = "the built-in synthetic sample (8/16-bit PNGs), patient split 60/20/20"
    split = table_split(table, root, size["n"])
    csv = home / f"{name}-split.csv"
    pd.DataFrame(
        {
            "path": split["relpath"],
            "label": split["label"],
            "patient_id": split["group"],
            "split": split["split"],
        }
    ).to_csv(csv, index=False)
    plain = _symlinks(split, home / f"plain-{name}")
    counts = split["split"].value_counts().to_dict()
    return {
        "source": {
            "kind": "csv",
            "csv_path": str(csv),
            "root": str(root),
            "group_col": "patient_id",
            "split_col": "split",
        },
        "split": "column",
        "plain": plain,
        "valid": "valid",
        "what": f"{what} {counts}",
    }


def _symlinks(items: pd.DataFrame, dest: Path) -> Path:
    """dest/{train,valid,test}/<label>/<file> links: the plain script's folders with the app's exact split."""
    shutil.rmtree(dest, ignore_errors=True)
    for i, (path, label, part) in enumerate(zip(items["path"], items["label"].astype(str), items["split"])):
        target = dest / part / label / f"{i:05d}_{Path(path).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path(path).resolve())
    return dest


# ---------------------------------------------------------------- the two sides


def app_config(
    ds: dict[str, Any], size: dict[str, Any], args: Any, seed: int, overrides: dict[str, Any]
) -> Any:
    """The app's RunConfig: its defaults, plus only the settings both sides share (and a variant's overrides)."""
    from core.base.config import RunConfig, SourceConfig

    cfg = RunConfig(name="parity", source=SourceConfig(**ds["source"]))
    cfg.data.img_size, cfg.data.batch_size, cfg.data.split.method = size["img_size"], size["bs"], ds["split"]
    t = cfg.train
    t.arch, t.pretrained, t.epochs, t.lr, t.seed = args.arch, False, size["epochs"], args.lr, seed
    if args.threads:
        t.torch_threads = args.threads
    for key, value in overrides.items():
        obj = cfg
        *path, last = key.split(".")
        for part in path:
            obj = getattr(obj, part)
        setattr(obj, last, value)
    return cfg.validate()


def app_run(
    ds: dict[str, Any], size: dict[str, Any], args: Any, seed: int, overrides: dict[str, Any], run_dir: Path
) -> dict[str, Any]:
    """One training job in this process; test metrics of the saved model and of the other weights choice."""
    from core.base.config import to_dict
    from core.runs.jobs import run_inline
    from core.runs.rundir import RunFolder

    cfg = app_config(ds, size, args, seed, overrides)
    t0 = time.perf_counter()
    summary = run_inline("train", {"config": to_dict(cfg)}, run_dir=run_dir)
    seconds = time.perf_counter() - t0
    test = summary["metrics"]["test"]
    hist = RunFolder(run_dir).read_history()
    out = {
        "seconds": seconds,
        "accuracy": test["accuracy"],
        "roc_auc": test["roc_auc"],
        "valid_accuracy": summary["metrics"]["valid"]["accuracy"],
        "model_epoch": summary.get("model_epoch"),
        "weights": summary.get("model_weights"),
        "best_epoch": summary["best_epoch"],
        "epochs_run": len(hist),
        "epoch_s": list(np.diff([0.0, *hist["time_s"]])),
    }
    other = _other_weights(run_dir, summary)
    if other:
        out["other"] = other
    c.free_memory()
    return out


def _other_weights(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any] | None:
    """Test metrics of the best-valid-loss checkpoint when the saved model is the last epoch (free ablation)."""
    from core.evaluation import evaluate
    from core.evaluation.predict import Predictor
    from core.runs.rundir import RunFolder

    run = RunFolder(run_dir)
    ckpt = run.best_checkpoint
    if summary.get("model_weights") != "last" or not ckpt.is_file():
        return None
    from safetensors.torch import load_file

    pred = Predictor(run.model_dir, device="cpu")
    pred.model.load_state_dict(load_file(str(ckpt)))
    test = pd.read_csv(run.predictions("test"))
    df, _ = pred.predict_paths(test["path"].tolist(), labels=test["label"].astype(str).tolist())
    m = evaluate.metrics_from_frame(df, summary["classes"])
    return {
        "weights": "best",
        "epoch": summary["best_epoch"],
        "accuracy": m["accuracy"],
        "roc_auc": m["roc_auc"],
    }


def plain_run(ds: dict[str, Any], size: dict[str, Any], args: Any, seed: int) -> dict[str, Any]:
    """The notebook: from_folder + Resize + aug_transforms(), vision_learner from scratch, fit_one_cycle, test."""
    from fastai.data.transforms import get_image_files
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms
    from fastai.vision.learner import vision_learner
    from torchvision.models import resnet18, resnet34

    set_seed(seed, reproducible=True)
    t0 = time.perf_counter()
    kw = {} if args.plain_workers < 0 else {"num_workers": args.plain_workers}
    dls = ImageDataLoaders.from_folder(
        ds["plain"],
        train="train",
        valid=ds["valid"],
        bs=size["bs"],
        seed=seed,
        item_tfms=Resize(size["img_size"]),
        batch_tfms=aug_transforms(),
        **kw,
    )
    learn = vision_learner(
        dls, {"resnet18": resnet18, "resnet34": resnet34}[args.arch], pretrained=False, metrics=accuracy
    )
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(size["epochs"], args.lr)
        learn.get_preds()  # the notebook looks at validation too
        probs, y = learn.get_preds(
            dl=dls.test_dl(get_image_files(Path(ds["plain"]) / "test"), with_labels=True)
        )
    seconds = time.perf_counter() - t0
    m = c._score(y.numpy(), probs.float().numpy(), list(dls.vocab))
    del learn, dls
    c.free_memory()
    return {"seconds": seconds, **m}


# ---------------------------------------------------------------- summary


def variants(args: Any) -> dict[str, dict[str, Any]]:
    """Side name -> app setting overrides (None for the plain script)."""
    out: dict[str, Any] = {"app": {}, "plain": None}
    for spec in args.variant:
        name, _, body = spec.partition(":")
        out[name] = {k: _value(v) for k, v in (kv.split("=", 1) for kv in body.split(",") if kv)}
    return {name: out[name] for name in [s.strip() for s in args.sides.split(",") if s.strip()]}


def _value(text: str) -> Any:
    """A command-line setting value: JSON when it parses (numbers, true/false), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def mean_sd(values: list[float]) -> dict[str, float]:
    """Mean and sample sd (0 for one value)."""
    vals = [v for v in values if v is not None]
    return {
        "mean": statistics.fmean(vals) if vals else float("nan"),
        "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
    }


def side_summary(runs: list[dict[str, Any]], n_train: int, epochs: int) -> dict[str, Any]:
    """Means and sds of one side's runs, plus the runs themselves."""
    out = {k: mean_sd([r[k] for r in runs]) for k in ("accuracy", "roc_auc", "seconds")}
    out["images_per_s"] = c.ratio(n_train * epochs, out["seconds"]["mean"])
    if all("other" in r for r in runs):
        out["best_ckpt_accuracy"] = mean_sd([r["other"]["accuracy"] for r in runs])
        out["best_ckpt_roc_auc"] = mean_sd([r["other"]["roc_auc"] for r in runs])
    out["runs"] = runs
    return out


def compare(sides: dict[str, Any], name: str) -> dict[str, Any]:
    """Differences of one app side against the plain script, and whether the targets are met."""
    a, p = sides[name], sides["plain"]
    d_acc = a["accuracy"]["mean"] - p["accuracy"]["mean"]
    d_auc = a["roc_auc"]["mean"] - p["roc_auc"]["mean"]
    time_ratio = c.ratio(p["seconds"]["mean"], a["seconds"]["mean"])
    return {
        "acc_diff": d_acc,
        "auc_diff": d_auc,
        "time_ratio_plain_over_app": time_ratio,
        "accuracy_target_met": d_acc >= TARGET_DIFF and d_auc >= TARGET_DIFF,
        "speed_target_met": time_ratio >= 1.0,
    }


def run_dataset(name: str, args: Any, home: Path) -> dict[str, Any]:
    """Every side x seed on one data set, in rotating order (load drift hits every side alike)."""
    size = dict(SIZES[name][args.size])
    size.update({k: v for k, v in (("epochs", args.epochs), ("img_size", args.img_size)) if v})
    ds = dataset(name, size, home)
    sides = variants(args)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    names = list(sides)
    for k in range(args.seeds):
        seed = args.seed + k
        order = names[k % len(names) :] + names[: k % len(names)]
        for side in order:
            c.log(f"{name}: seed {seed}: {side}")
            run_dir = home / "runs" / f"{name}-{side}-{seed}"
            if sides[side] is not None:
                c.fresh_cache(home, f"{name}-{side}-{seed}")  # a cold decode cache: first-run costs counted
            r = (
                plain_run(ds, size, args, seed)
                if sides[side] is None
                else app_run(ds, size, args, seed, sides[side], run_dir)
            )
            r["seed"] = seed
            runs[side].append(r)
            c.log(
                f"{name}: seed {seed}: {side}: {r['seconds']:.1f}s test acc={r['accuracy']:.3f} "
                f"auc={r['roc_auc']:.3f}"
                + (f" (best ckpt acc={r['other']['accuracy']:.3f})" if "other" in r else "")
            )
            c.log("RUN " + json.dumps(c._clean({"dataset": name, "side": side, **r})))
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
    n_train = _n_train(ds)
    summary = {s: side_summary(rs, n_train, size["epochs"]) for s, rs in runs.items()}
    result: dict[str, Any] = {
        "benchmark": "parity",
        "smoke": args.smoke,
        "dataset": name,
        "size": args.size,
        "data": ds["what"],
        "settings": {**size, "lr": args.lr, "arch": args.arch, "seeds": args.seeds, "first_seed": args.seed},
        "variants": {s: o for s, o in sides.items() if o},
        "sides": summary,
    }
    if "plain" in summary:
        result["vs_plain"] = {s: compare(summary, s) for s in summary if s != "plain"}
    return result


def _n_train(ds: dict[str, Any]) -> int:
    """Training images of a data set (from the plain side's folders)."""
    return sum(1 for p in (Path(ds["plain"]) / "train").rglob("*") if p.is_file() or p.is_symlink())


def main() -> None:
    """Run the chosen data sets; print one JSON line per data set."""
    args = parse()
    c.setup(args)
    c.warmup()
    base = Path(args.keep) if args.keep else None
    with c.app_home("xrt-parity-") as home:
        work = base or home
        work.mkdir(parents=True, exist_ok=True)
        for name in [s.strip() for s in args.datasets.split(",") if s.strip()]:
            t0 = time.perf_counter()
            result = run_dataset(name, args, work)
            result.update(machine=c.machine(), wall_s=time.perf_counter() - t0)
            c.emit(result)


if __name__ == "__main__":
    main()
