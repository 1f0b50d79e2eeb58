"""Sites on real data: per-site recalibration at a new "site" and leave-one-site-out cross-validation.

recalibrate: the app trains on the real chest X-rays (chest_xray_224, patient-grouped split, calibrated on
validation), then meets PneumoniaMNIST's test images (28 px re-saves: another resolution and pipeline) as a new
site. It reports accuracy / ROC AUC there, and the per-site temperature with ECE / Brier before and after
(cross-fitted, paired bootstrap CIs), exactly as `evaluate --recalibrate-site` computes them.

loso: NIH ChestX-ray14 (64 px), "No Finding" against any finding, with the view position (PA / AP) standing in
for the site (patients seen in both views are left out, as the app refuses them). One model per held-out view;
each view's accuracy and ROC AUC with patient-level CIs, the worst-view gap and the spread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common as c
import numpy as np
import pandas as pd

NIH = c.SHARED / "nih_chestxray14_64px"
MNIST = c.SHARED / "pneumoniamnist" / "pneumoniamnist.npz"


def parse() -> Any:
    """Command-line options (the defaults are the short CPU version)."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--part", choices=("recalibrate", "loso", "both"), default="both")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--n", type=int, default=600, help="training images (chest: class-balanced; NIH: first n)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--arch", default="resnet18")
    args = p.parse_args()
    if args.smoke:
        args.seeds, args.n, args.img_size, args.epochs, args.bs = 1, 120, 32, 1, 16
    return args


def config(args: Any, seed: int, csv: Path, root: Path) -> Any:
    """The app's run config for a CSV with patient ids (from scratch, the bench's schedule)."""
    from core.base.config import SourceConfig

    spec = c.TrainSpec(arch=args.arch, img_size=args.img_size, bs=args.bs, epochs=args.epochs, seed=seed)
    cfg = c.run_config(
        spec, SourceConfig(kind="csv", csv_path=str(csv), root=str(root), group_col="patient_id")
    )
    cfg.train.torch_threads = args.threads
    return cfg


def mnist_site(home: Path) -> Path:
    """PneumoniaMNIST's test split as a labelled folder (NORMAL / PNEUMONIA sub-folders of PNGs)."""
    from PIL import Image

    data = np.load(c.require(MNIST, "pneumoniamnist"))
    root = home / "new_site"
    for i, (img, y) in enumerate(zip(data["test_images"], data["test_labels"].ravel())):
        folder = root / ("PNEUMONIA" if y == 1 else "NORMAL")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"mnist_{i:04d}.png")
    return root


def recalibrate(args: Any, seed: int, home: Path) -> dict[str, Any]:
    """Train on the chest X-rays, score the new site, fit and judge its temperature."""
    from core.base.config import SourceConfig, to_dict
    from core.evaluation import site_calibration
    from core.evaluation.predict import Predictor, score_source
    from core.runs import jobs
    from core.runs.rundir import RunFolder

    items = c.chest_items(args.n, seed)
    csv = home / f"chest-{seed}.csv"
    items.assign(patient_id=items["group"])[["relpath", "label", "patient_id"]].rename(
        columns={"relpath": "path"}
    ).to_csv(csv, index=False)
    run = home / f"chest-run-{seed}"
    (_, train_s) = c.timed(
        lambda: jobs.run_inline("train", {"config": to_dict(config(args, seed, csv, c.CHEST))}, run_dir=run)
    )
    pred = Predictor(RunFolder(run).model_dir, device="cpu")
    scored = score_source(pred, SourceConfig(kind="folder", root=str(mnist_site(home))))
    df = scored.predictions
    reports = site_calibration.recalibrate(df, pred.classes, np.full(len(df), "mnist"), pred.temperature)
    rep = reports["mnist"]
    return {
        "train_seconds": train_s,
        "own_temperature": pred.temperature,
        "new_site_n": len(df),
        "new_site_accuracy": scored.metrics.get("accuracy"),
        "new_site_roc_auc": scored.metrics.get("roc_auc"),
        "site_temperature": rep.get("temperature"),
        "ece": rep.get("ece"),
        "brier": rep.get("brier"),
        "note": rep.get("reason"),
    }


def nih_views(n: int) -> pd.DataFrame:
    """NIH labels as a binary table (finding / no finding) with the view as the site; mixed-view patients dropped."""
    table = pd.read_csv(c.require(NIH, "nih_chestxray14_64px") / "labels.csv")
    mixed = table.groupby("patient_id")["view_position"].transform("nunique") > 1
    table = table[~mixed].head(n)
    return pd.DataFrame(
        {
            "path": table["path"],
            "label": np.where(table["labels"] == "No Finding", "no_finding", "finding"),
            "patient_id": table["patient_id"].astype(str),
            "view": table["view_position"],
        }
    )


def loso(args: Any, seed: int, home: Path) -> dict[str, Any]:
    """Leave one view out on NIH: per-view metrics with CIs, the gap and the spread (metrics.json's loso)."""
    from core.base.config import to_dict
    from core.runs import jobs

    csv = home / f"nih-{seed}.csv"
    nih_views(args.n).to_csv(csv, index=False)
    cfg = config(args, seed, csv, NIH)
    cfg.data.split.method, cfg.data.split.site_col = "loso", "view"
    run = home / f"nih-run-{seed}"
    result, seconds = c.timed(lambda: jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=run))
    rec = result["loso"]
    per_site = {
        g["group"]: {m: g[m] for m in ("accuracy", "roc_auc")} | {"n": g["n"]} for g in rec["per_site"]
    }
    return {"train_seconds": seconds, "per_view": per_site, "gap": rec["gap"], "spread": rec["spread"]}


def main() -> None:
    """Run the chosen parts for each seed; emit one JSON line."""
    args = parse()
    c.setup(args)
    per_seed = []
    with c.app_home("xrt-bench-sites-") as home:
        for i in range(args.seeds):
            seed = args.seed + i
            row: dict[str, Any] = {"seed": seed}
            if args.part in ("recalibrate", "both"):
                c.log(f"seed {seed}: recalibrate")
                row["recalibrate"] = recalibrate(args, seed, home)
            if args.part in ("loso", "both"):
                c.log(f"seed {seed}: leave one view out")
                row["loso"] = loso(args, seed, home)
            per_seed.append(row)
    c.emit(
        {
            "benchmark": "sites",
            "smoke": args.smoke,
            "machine": c.machine(),
            "args": vars(args),
            "per_seed": per_seed,
        }
    )


if __name__ == "__main__":
    main()
