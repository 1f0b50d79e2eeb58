"""Results a lab can defend, on the real chest X-rays: test ECE / Brier before and after temperature scaling, and
conformal coverage / referral / accuracy of the answered at 90 % and 95 % (marginal and Mondrian), per seed.

Each seed trains the app's own training job (patient-grouped train / valid / test split, from scratch) with
calibration on, then measures on the held-out test split only: the temperature and the conformal scores come
from the validation split. With --report, writes the first seed's report (report.html) and checklist.md.
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
    cfg.train.torch_threads = args.threads
    run = home / f"run-{seed}"
    jobs.run_inline("train", {"config": to_dict(cfg)}, run_dir=run)
    return run


def measure(run: Path) -> dict[str, Any]:
    """Temperature, test ECE / Brier before-after, conformal results on the test split."""
    from core.evaluation import calibration, conformal, evaluate

    cal = calibration.calibration_report(run, n_resamples=1000)
    test = cal["sets"]["test"] if cal and "test" in cal["sets"] else None
    metrics = evaluate.run_summary(run)["metrics"]
    sets = {}
    for coverage, mondrian in RULES:
        rep = conformal.run_conformal(str(run), conformal.SetRule(coverage, "lac", mondrian))
        if rep is not None:
            s = rep["sets"]["test"]
            sets[f"{coverage:.2f}{'_mondrian' if mondrian else ''}"] = {
                k: s[k] for k in ("coverage", "referral_rate", "accuracy_answered", "mean_set_size", "n")
            }
    return {
        "temperature": cal["temperature"]["temperature"] if cal else None,
        "test_ece": test["ece"] if test else None,
        "test_brier": test["brier"] if test else None,
        "test_accuracy": metrics.get("test", {}).get("accuracy"),
        "test_roc_auc": metrics.get("test", {}).get("roc_auc"),
        "conformal_lac": sets,
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
            run, seconds = c.timed(lambda s=seed: train(args, s, home))
            per_seed.append({"seed": seed, "train_seconds": seconds, **measure(run)})
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
