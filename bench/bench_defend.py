"""Results a lab can defend, on the real chest X-rays: test ECE / Brier before and after temperature scaling,
conformal coverage / referral / accuracy of the answered at 90 % and 95 % (marginal and Mondrian), and the fold
ensemble against one fold model and the final model (test ROC AUC / accuracy), per seed.

Each seed trains the app's own training job (patient-grouped train / valid / test split, from scratch) with
calibration on, then measures on the held-out test split only: the temperature and the conformal scores come
from the validation split (with --k-folds: the out-of-fold predictions). With --k-folds >= 2 the run is a k-fold
run with a final model on all non-test data, and the test split is scored by the final model, by fold 1's model
and by the mean of the k fold models (core.evaluation.ensemble). With --report, writes the first seed's report
(report.html) and checklist.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import common as c
import numpy as np

RULES = ((0.90, False), (0.95, False), (0.90, True), (0.95, True))


def parse() -> Any:
    """Command-line options (the defaults are the short CPU version)."""
    p = c.base_parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--n", type=int, default=600, help="real chest X-rays used (class-balanced)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--test-pct", type=float, default=0.3)
    p.add_argument(
        "--k-folds", type=int, default=3, help="folds of the k-fold run (0: one train/valid split)"
    )
    p.add_argument("--report", default="", help="folder for the first seed's report (default: not kept)")
    args = p.parse_args()
    if args.smoke:
        args.seeds, args.n, args.img_size, args.epochs, args.bs = 1, 80, 32, 1, 16
    return args


def train(args: Any, seed: int, home: Path) -> Path:
    """One calibrated training run of the app on the chest subset; its run folder."""
    from core.base.config import SourceConfig, to_dict
    from core.runs import jobs

    items = c.chest_items(args.n, seed)
    csv = home / f"chest-{seed}.csv"
    items.assign(patient_id=items["group"])[["relpath", "label", "patient_id"]].rename(
        columns={"relpath": "path"}
    ).to_csv(csv, index=False)
    spec = c.TrainSpec(arch=args.arch, img_size=args.img_size, bs=args.bs, epochs=args.epochs, seed=seed)
    cfg = c.run_config(
        spec, SourceConfig(kind="csv", csv_path=str(csv), root=str(c.CHEST), group_col="patient_id")
    )
    cfg.data.split.test_pct = args.test_pct
    if args.k_folds >= 2:
        cfg.data.split.k_folds = args.k_folds
        cfg.train.final_model_on_all = True
    cfg.train.torch_threads = args.threads
    run = home / f"run-{seed}"
    jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=run)
    return run


def measure(run: Path, test: Any) -> dict[str, Any]:
    """Temperature, test ECE / Brier before-after, conformal results on the test split (`test`: its calibrated
    predictions table, the run's own or, for a k-fold run, which scores no test split, its final model's)."""
    from core.evaluation import calibration, conformal, evaluate

    summary_ = evaluate.run_summary(run)
    classes = list(summary_["classes"])
    t = calibration.run_temperature(summary_)
    frames = evaluate.load_run_predictions(run)
    fit_on = "oof" if "oof" in frames else "valid"
    cal_sets = conformal.calibrate_frame(frames[fit_on], classes, fit_on)
    rep = calibration.set_report(test, classes, t, n_resamples=1000) if t else None
    y, probs = evaluate.labels_and_probs(evaluate.labelled(test), classes)
    sets = {}
    for coverage, mondrian in RULES:
        s = conformal.coverage_report(y, probs, cal_sets, conformal.SetRule(coverage, "lac", mondrian), 1000)
        sets[f"{coverage:.2f}{'_mondrian' if mondrian else ''}"] = {
            k: s[k] for k in ("coverage", "referral_rate", "accuracy_answered", "mean_set_size", "n")
        }
    return {
        "temperature": t.temperature if t else None,
        "conformal_calibrated_on": f"{fit_on} ({cal_sets.n} images)",
        "test_ece": rep["ece"] if rep else None,
        "test_brier": rep["brier"] if rep else None,
        "conformal_lac": sets,
    }


def test_frames(run: Path) -> dict[str, Any]:
    """Calibrated test prediction tables: the run's own ("run"); for a k-fold run the final model's, fold 1's and
    the fold ensemble's (with and without TTA), each as Predict makes them."""
    from core.evaluation import evaluate
    from core.evaluation.ensemble import EnsemblePredictor
    from core.evaluation.predict import Predictor
    from core.runs.rundir import RunFolder

    folder = RunFolder(run)
    folds = dict(folder.fold_models())
    if len(folds) < 2:
        return {"run": evaluate.load_run_predictions(run)["test"]}
    items = folder.read_items()
    test = items[items["split"] == "test"]
    paths, labels = [str(c.CHEST / r) for r in test["relpath"]], test["label"].tolist()
    models = {"final": Predictor(folder.model_dir), "fold1": Predictor(folds[min(folds)])}
    models["ensemble"] = EnsemblePredictor(run)
    out = {name: pred.predict_paths(paths, labels=labels)[0] for name, pred in models.items()}
    out["ensemble_tta"] = models["ensemble"].predict_paths(paths, labels=labels, tta=True)[0]
    return out


def scores(frames: dict[str, Any], classes: list[str]) -> dict[str, dict[str, float]]:
    """Test ROC AUC / accuracy of each model's predictions table."""
    from core.evaluation import evaluate

    out = {}
    for name, df in frames.items():
        y, probs = evaluate.labels_and_probs(evaluate.labelled(df), classes)
        out[name] = c._score(y, probs, classes)
    return out


def one_seed(args: Any, seed: int, home: Path) -> tuple[Path, dict[str, Any]]:
    """Train one seed and measure it; (run folder, its record)."""
    from core.evaluation import evaluate

    run, seconds = c.timed(lambda: train(args, seed, home))
    frames = test_frames(run)
    headline = frames.get("run", frames.get("final"))
    classes = list(evaluate.run_summary(run)["classes"])
    return run, {
        "seed": seed,
        "train_seconds": seconds,
        "n_test": int(len(headline)),
        **measure(run, headline),
        "models": scores(frames, classes),
    }


def summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds of the headline numbers."""

    def ms(values: list[float]) -> dict[str, float]:
        v = np.array([x for x in values if x is not None], dtype=float)
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan")}

    out = {
        "temperature": ms([r["temperature"] for r in per_seed]),
        "ece_before": ms([r["test_ece"]["before"]["value"] for r in per_seed if r["test_ece"]]),
        "ece_after": ms([r["test_ece"]["after"]["value"] for r in per_seed if r["test_ece"]]),
        "brier_before": ms([r["test_brier"]["before"]["value"] for r in per_seed if r["test_brier"]]),
        "brier_after": ms([r["test_brier"]["after"]["value"] for r in per_seed if r["test_brier"]]),
    }
    for name in per_seed[0]["models"]:
        for stat in ("roc_auc", "accuracy"):
            out[f"{stat}_{name}"] = ms([r["models"][name][stat] for r in per_seed])
    for key in per_seed[0]["conformal_lac"]:
        for stat in ("coverage", "referral_rate", "accuracy_answered"):
            out[f"{stat}_{key}"] = ms([r["conformal_lac"][key][stat]["value"] for r in per_seed])
    return out


def main() -> None:
    """Train, measure, emit one JSON line."""
    args = parse()
    c.setup(args)
    per_seed = []
    with c.app_home("xrt-bench-defend-") as home:
        for i in range(args.seeds):
            seed = args.seed + i
            c.log(f"seed {seed}: training")
            run, record = one_seed(args, seed, home)
            per_seed.append(record)
            if i == 0 and args.report:
                from core.evaluation import checklist
                from core.evaluation.report import build_report

                build_report(run, args.report, png=False)
                md = checklist.to_markdown(checklist.checklist(run), run.name)
                (Path(args.report) / "checklist.md").write_text(md, encoding="utf-8")
    c.emit(
        {
            "benchmark": "defend",
            "smoke": args.smoke,
            "machine": c.machine(),
            "args": vars(args),
            "summary": summary(per_seed),
            "per_seed": per_seed,
        }
    )


if __name__ == "__main__":
    main()
