"""The two new task types on real data, on a patient-grouped held-out test set, over N seeds.

ordinal (../shared/data/knee_kl_oai224, KL 0-4): the app's ordinal run with the CORN head (`--ordinal-head corn`)
against the same run with the cross-entropy head (`ce`: plain 5-class CE, softmax), same split, seed and settings
(by default the app's planned schedule for this set from scratch: 128 px, batch 8, 10 epochs): test QWK, MAE and
off-by-one accuracy with patient-level 95 % bootstrap CIs. CORN's grade is its rank (the median grade); CE's is
reported three ways from the same run: the median grade (what the app predicts for either head), the most probable
grade and the rounded expected grade.
multilabel (../shared/data/nih_chestxray14_64px, 14 findings + No Finding): the app's multi-label run against a
plain fastai script (`DataBlock(ImageBlock, MultiCategoryBlock)`, `vision_learner(resnet18)`, `fit_one_cycle`,
BCE, last epoch) on the same split and epochs: test macro ROC AUC (findings with both classes in the test set) and
the time ratio plain_seconds / app_seconds.

Both sides train from scratch (no pretrained weights offline). The split: patients held out by the app's grouped
split (test 20 %, validation 20 %), written as a split column both sides read. Prints one JSON line.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import common as c
import numpy as np
import pandas as pd

KNEE = c.SHARED / "knee_kl_oai224"
NIH = c.SHARED / "nih_chestxray14_64px"
SIZES = {  # task -> size -> settings
    "ordinal": {
        "default": dict(n=None, img_size=128, bs=8, epochs=10),  # the app's planned schedule for 174 images
        "smoke": dict(n=30, img_size=32, bs=16, epochs=1),
    },
    "multilabel": {
        "default": dict(n=None, img_size=64, bs=32, epochs=8),
        "smoke": dict(n=60, img_size=32, bs=16, epochs=1),
    },
}
LR = 3e-3


def parse() -> Any:
    """Command-line options."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", default="ordinal,multilabel", help="comma list of ordinal,multilabel")
    p.add_argument("--seeds", type=int, default=3, help="training seeds (the split stays the same)")
    p.add_argument(
        "--data",
        choices=["real", "sample"],
        default="real",
        help="real: knee_kl_oai224 / nih_chestxray14_64px in ../shared/data; sample: the app's SYNTHETIC task samples",
    )
    p.add_argument("--epochs", type=int, default=0, help="override the epochs of every run (0 = the size's)")
    p.add_argument("--img-size", type=int, default=0, help="override the image size (0 = the size's)")
    p.add_argument("--bs", type=int, default=0, help="override the batch size (0 = the size's)")
    p.add_argument("--n-boot", type=int, default=500, help="bootstrap resamples (patients) of the CIs")
    p.add_argument(
        "--sides",
        default="app,plain",
        help="multi-label sides, comma list of app, app_matched (the plain script's input settings), plain",
    )
    return p.parse_args()


def source(task: str, data: str, home: Path) -> dict[str, Any]:
    """The table, image root and label column of a task's data set (real, or the synthetic sample made in `home`)."""
    from core.data import sample_tasks

    if data == "sample" and task == "ordinal":
        root = sample_tasks.ensure_ordinal_sample(home / "sample_ordinal")
        return {"csv": root / sample_tasks.GRADES_CSV, "root": root, "label_col": "grade"}
    if data == "sample":
        root = sample_tasks.ensure_multilabel_sample(home / "sample_multilabel")
        return {"csv": root / sample_tasks.FINDINGS_CSV, "root": root, "label_col": "Finding Labels"}
    root = KNEE if task == "ordinal" else NIH
    return {
        "csv": c.require(root / "labels.csv", root.name),
        "root": root,
        "label_col": "kl_grade" if task == "ordinal" else "labels",
    }


def split_table(csv: Path, label_col: str, n: int | None, out: Path, seed: int = 42) -> Path:
    """The table with a patient-grouped train / valid / test split column (the app's grouped split), as a CSV."""
    from core.base.config import SplitConfig
    from core.data.splits import assign_splits

    table = pd.read_csv(csv)
    if n:
        patients = table["patient_id"].drop_duplicates().sample(frac=1, random_state=seed)
        keep = patients.iloc[: max(4, n // 2)]
        table = table[table["patient_id"].isin(keep)].head(n)
    items = table.rename(columns={label_col: "label"}).assign(group=table["patient_id"].astype(str))
    items["label"] = items["label"].astype(str)
    cfg = SplitConfig(method="group", valid_pct=0.2, test_pct=0.2, seed=seed)
    table["split"] = assign_splits(items.reset_index(drop=True), cfg)["split"].to_numpy()
    table.to_csv(out, index=False)
    return out


MATCHED = "matched"  # the app side with the plain script's settings: no normalisation, fastai's aug values


def app_run(
    csv: Path,
    label_col: str,
    task: str,
    size: dict[str, Any],
    seed: int,
    head: str = "corn",
    settings: str = "default",
    **source: Any,
) -> dict[str, Any]:
    """One app training job on the split table; its test predictions and seconds. settings=MATCHED: the plain
    script's input settings (no normalisation from scratch, fastai's aug_transforms values: warp 0.2)."""
    from core.base.config import RunConfig, SourceConfig, to_dict
    from core.base.paths import runs_dir
    from core.runs import jobs
    from core.runs.rundir import RunFolder

    cfg = RunConfig(
        source=SourceConfig(
            kind="csv",
            csv_path=str(csv),
            label_col=label_col,
            group_col="patient_id",
            split_col="split",
            **{k: str(v) if isinstance(v, Path) else v for k, v in source.items()},
        )
    )
    cfg.data.img_size, cfg.data.batch_size, cfg.data.split.method = size["img_size"], size["bs"], "column"
    cfg.data.task.type, cfg.data.task.ordinal_head = task, head
    cfg.train.pretrained, cfg.train.epochs, cfg.train.lr, cfg.train.seed = False, size["epochs"], LR, seed
    if settings == MATCHED:
        from core.base.config import aug_preset

        cfg.data.normalize, cfg.data.aug = "none", aug_preset("fastai")
    run = runs_dir() / f"{task}-{head}-{label_col}-{seed}-{settings}"
    _, seconds = c.timed(lambda: jobs.run_inline("train", {"config": to_dict(cfg.validate())}, run_dir=run))
    folder = RunFolder(run)
    test = pd.read_csv(folder.predictions("test"), keep_default_na=False)
    return {"test": test, "seconds": seconds, "classes": folder.read_metrics()["classes"]}


def grade_stats(y: np.ndarray, pred: np.ndarray, k: int, groups: Any, n_boot: int) -> dict[str, Any]:
    """QWK, MAE and off-by-one accuracy of predicted grade indices, each with a patient-level 95 % bootstrap CI."""
    from core.evaluation.ordinal import qwk
    from core.evaluation.taskstats import bootstrap

    def stat(idx: np.ndarray) -> dict[str, float]:
        err = np.abs(pred[idx] - y[idx])
        return {
            "qwk": qwk(y[idx], pred[idx], k),
            "mae": float(err.mean()),
            "off_by_one": float((err <= 1).mean()),
        }

    ci = bootstrap(stat, len(y), groups, n_boot)
    return {**{m: v["value"] for m, v in ci.items()}, "ci": {m: [v["lo"], v["hi"]] for m, v in ci.items()}}


DECODINGS = ("median", "argmax", "expected")


def decode(probs: np.ndarray, how: str) -> np.ndarray:
    """Grade indices from K grade probabilities: the median grade (CORN's rank rule: how many P(grade > k) exceed
    0.5), the most probable grade, or the expected grade rounded."""
    from core.models.heads import expected_grade, predicted_grade

    if how == "median":
        return predicted_grade(probs)
    if how == "argmax":
        return probs.argmax(1)
    return np.clip(np.rint(expected_grade(probs)), 0, probs.shape[1] - 1).astype(int)


def ordinal_seed(
    csv: Path, src: dict[str, Any], size: dict[str, Any], seed: int
) -> dict[str, dict[str, Any]]:
    """The app's ordinal run with the CORN head and with the cross-entropy head (K outputs, softmax: plain 5-class CE)
    on the same split and seed: test grade metrics (per decoding) and seconds of each.

    CORN's own grade is the median decoding (the number of P(grade > k) above 0.5); CE is reported with its most
    probable grade (argmax), the median and the rounded expected grade, all from the same run."""
    from core.data.labels import infer_order
    from core.evaluation.taskstats import groups_of

    out = {}
    for name in ("corn", "ce"):
        r = app_run(csv, src["label_col"], "ordinal", size, seed, head=name, root=src["root"])
        grades = infer_order(r["classes"]) or list(r["classes"])
        probs = r["test"][[f"prob_{g}" for g in grades]].to_numpy(float)
        y = r["test"]["label"].astype(str).map({g: i for i, g in enumerate(grades)}).to_numpy()
        groups = groups_of(r["test"])
        for dec in ("median",) if name == "corn" else DECODINGS:
            side = f"{name}_{dec}"
            out[side] = grade_stats(y, decode(probs, dec), len(grades), groups, size["n_boot"])
            out[side]["seconds"] = r["seconds"]
            c.log(side, seed, out[side])
    return out


def plain_multilabel(
    csv: Path, src: dict[str, Any], size: dict[str, Any], seed: int
) -> tuple[pd.DataFrame, list[str], float]:
    """The plain fastai multi-label script on the same split: test probabilities, its vocab, seconds."""
    from fastai.vision.all import (
        ColReader,
        DataBlock,
        ImageBlock,
        MultiCategoryBlock,
        Resize,
        accuracy_multi,
        aug_transforms,
        resnet18,
        set_seed,
        vision_learner,
    )

    table = pd.read_csv(csv)
    table["path"] = [str(src["root"] / p) for p in table["path"]]
    table["findings"] = [
        "|".join(f for f in str(v).split("|") if f != "No Finding") for v in table[src["label_col"]]
    ]
    fit_rows = table[table["split"] != "test"].reset_index(drop=True)
    t0 = time.perf_counter()
    set_seed(seed, reproducible=True)
    block = DataBlock(
        blocks=(
            ImageBlock,
            MultiCategoryBlock(
                vocab=sorted({f for v in fit_rows["findings"] for f in str(v).split("|") if f})
            ),
        ),
        get_x=ColReader("path"),
        get_y=ColReader("findings", label_delim="|"),
        splitter=lambda rows: (
            list(np.flatnonzero(fit_rows["split"] != "valid")),
            list(np.flatnonzero(fit_rows["split"] == "valid")),
        ),
        item_tfms=Resize(size["img_size"]),
        batch_tfms=aug_transforms(),
    )
    dls = block.dataloaders(fit_rows, bs=size["bs"], num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy_multi)
    learn.fit_one_cycle(size["epochs"], LR)
    test = table[table["split"] == "test"].reset_index(drop=True)
    probs, _ = learn.get_preds(dl=dls.test_dl(test))
    seconds = time.perf_counter() - t0
    frame = pd.DataFrame(probs.numpy(), columns=[f"prob_{v}" for v in dls.vocab])
    frame["label"] = [v if v else "" for v in test["findings"]]
    return frame, list(dls.vocab), seconds


def macro_auc(frame: pd.DataFrame, findings: list[str], min_pos: int = 1) -> float:
    """Macro ROC AUC over the findings with at least `min_pos` positives and one negative in the table (labels:
    findings joined by '|')."""
    from core.evaluation.taskstats import fast_auc

    aucs = []
    for f in findings:
        pos = np.array([f in str(v).split("|") for v in frame["label"]])
        if pos.sum() >= min_pos and not pos.all() and f"prob_{f}" in frame:
            aucs.append(fast_auc(pos, frame[f"prob_{f}"].to_numpy(float)))
    return float(np.mean(aucs)) if aucs else float("nan")


COMMON = (
    10  # test positives a finding needs for the steadier macro AUC (findings with 1-3 positives swing it)
)


def auc_summary(frame: pd.DataFrame, findings: list[str]) -> dict[str, float]:
    """Macro ROC AUC over every finding with positives, over the findings with >= COMMON test positives, and the
    micro AUC (every image x finding cell pooled)."""
    from core.evaluation.taskstats import fast_auc

    pos = np.array([[f in str(v).split("|") for f in findings] for v in frame["label"]])
    probs = frame[[f"prob_{f}" for f in findings]].to_numpy(float)
    return {
        "macro_auc": macro_auc(frame, findings),
        f"macro_auc_{COMMON}plus": macro_auc(frame, findings, COMMON),
        "n_findings_10plus": int((pos.sum(0) >= COMMON).sum()),
        "micro_auc": fast_auc(pos.ravel(), probs.ravel()),
    }


def multilabel_seed(
    csv: Path, src: dict[str, Any], size: dict[str, Any], seed: int, sides: tuple[str, ...] = ("app", "plain")
) -> dict[str, dict[str, float]]:
    """The app's multi-label run (its defaults; "app_matched": the plain script's input settings) and the plain
    script on the same split and seed: test AUCs and seconds, per side asked for."""
    from core.data import labels as lab

    frames: dict[str, tuple[pd.DataFrame, list[str], float]] = {}
    for side in sides:
        if side == "plain":
            plain, vocab, plain_s = plain_multilabel(csv, src, size, seed)
            frames[side] = (plain, vocab, plain_s)
            continue
        app = app_run(
            csv,
            src["label_col"],
            "multilabel",
            size,
            seed,
            settings=MATCHED if side == "app_matched" else "default",
            root=src["root"],
            label_delimiter="|",
            no_finding="No Finding",
        )
        test = app["test"].assign(label=[v if v != lab.EMPTY else "" for v in app["test"]["label"]])
        frames[side] = (test, app["classes"], app["seconds"])
    shared = sorted(set.intersection(*(set(f[1]) for f in frames.values())))
    out = {side: {**auc_summary(f[0], shared), "seconds": f[2]} for side, f in frames.items()}
    c.log("multilabel", seed, out)
    return out


def summarise(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Mean and sd of every number of every side over the seeds."""
    out: dict[str, Any] = {}
    for side in per_seed[0]:
        out[side] = {}
        for key in (k for k in per_seed[0][side] if k != "ci"):
            vals = [s[side][key] for s in per_seed]
            out[side][key] = {
                "mean": statistics.fmean(vals),
                "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            }
    return out


def main() -> None:
    """Run the chosen tasks over the seeds and print the JSON line."""
    args = parse()
    c.setup(args)
    size_name = "smoke" if args.smoke else "default"
    seeds = [args.seed + i for i in range(1 if args.smoke else args.seeds)]
    result: dict[str, Any] = {
        "benchmark": "tasks",
        "smoke": args.smoke,
        "seeds": seeds,
        "machine": c.machine(),
    }
    with c.app_home("xrt-bench-tasks-") as home:
        for task in args.tasks.split(","):
            size = dict(SIZES[task][size_name])
            size.update(
                {
                    k: v
                    for k, v in (("epochs", args.epochs), ("img_size", args.img_size), ("bs", args.bs))
                    if v
                }
            )
            size["n_boot"] = 20 if args.smoke else args.n_boot
            src = source(task, args.data, home)
            csv = split_table(src["csv"], src["label_col"], size["n"], home / f"{task}.csv")
            if task == "ordinal":
                per_seed = [ordinal_seed(csv, src, size, s) for s in seeds]
            else:
                per_seed = [multilabel_seed(csv, src, size, s, tuple(args.sides.split(","))) for s in seeds]
            summary = summarise(per_seed)
            if task == "multilabel" and {"app", "plain"} <= set(summary):
                app_s, plain_s = summary["app"]["seconds"]["mean"], summary["plain"]["seconds"]["mean"]
                summary["vs_plain"] = {
                    **{
                        f"{k}_diff": summary["app"][k]["mean"] - summary["plain"][k]["mean"]
                        for k in ("macro_auc", f"macro_auc_{COMMON}plus", "micro_auc")
                    },
                    "time_ratio_plain_over_app": c.ratio(plain_s, app_s),
                }
            result[task] = {"data": args.data, "settings": size, "per_seed": per_seed, **summary}
    c.emit(result)


if __name__ == "__main__":
    main()
