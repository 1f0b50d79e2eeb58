"""Calibration at the end of training: a temperature fitted on the validation (k-fold: out-of-fold) predictions,
the run's prediction tables rescaled with it and the saved model(s) told (core.models.temperature; opt out with
`TrainConfig.calibrate` = False, `--no-calibrate`); the models also keep the held-out conformal scores
(core.evaluation.conformal), computed on the probabilities they will give."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.base.config import RunConfig
from core.evaluation import calibration, conformal, evaluate
from core.models.savedmodel import record
from core.models.temperature import Temperature, stamp
from core.runs import rundir
from core.runs.progress import Progress


def calibrate_sets(
    cfg: RunConfig,
    frames: dict[str, pd.DataFrame],
    fit_on: str,
    classes: list[str],
    progress: Progress | None = None,
) -> tuple[dict[str, pd.DataFrame], Temperature | None]:
    """Fit T on frames[fit_on] (when the run calibrates); every frame rescaled with it, and T (None: unchanged)."""
    if not cfg.train.calibrate or cfg.data.task.type != "single":  # a temperature is a single-label softmax's
        return frames, None
    t = calibration.fit_on_frame(frames[fit_on], classes, fit_on)
    if progress is not None:
        progress.log(
            f"temperature {t.temperature:.3f} fitted on {t.n} {fit_on} predictions "
            f"(NLL {t.nll_before:.4f} -> {t.nll_after:.4f})"
            if t
            else f"too few {fit_on} predictions to fit a temperature: probabilities left uncalibrated"
        )
    if t is None:
        return frames, None
    return {k: calibration.scale_frame(v, classes, t.temperature) for k, v in frames.items()}, t


def stamp_models(
    run: rundir.RunFolder, held_out: pd.DataFrame, classes: list[str], fit_on: str, t: Temperature | None
) -> None:
    """Tell every saved model of the run its temperature and the held-out conformal scores (after scaling)."""
    cal = conformal.calibrate_frame(held_out, classes, fit_on)
    for model_dir in run.models().values():
        stamp(model_dir, t)
        record(model_dir, conformal.KEY, cal.to_dict() if cal is not None else None)


def summary_entry(t: Temperature | None) -> dict:
    """metrics.json's record of the temperature the run's tables are scaled with ({} when none)."""
    return {calibration.SUMMARY_KEY: t.to_dict()} if t is not None else {}


def calibrate_run(run_dir: str | Path, off: bool = False) -> Temperature | None:
    """(Re)fit the temperature of a finished run (or remove it with `off`): its prediction tables, metrics.json and
    saved models follow. For runs trained before calibration existed, or with --no-calibrate."""
    run = rundir.RunFolder(run_dir)
    summary = evaluate.run_summary(run_dir)
    classes = list(summary["classes"])
    from core.evaluation import bytask

    if bytask.task_of(summary) != "single":
        raise ValueError(
            f"{run.path.name} is a {bytask.task_of(summary)} run: temperature scaling is for single-label runs"
        )
    frames = evaluate.load_run_predictions(run_dir)
    old = calibration.run_temperature(summary)
    if old is not None:  # back to the raw probabilities first
        frames = {k: calibration.scale_frame(v, classes, 1.0 / old.temperature) for k, v in frames.items()}
    fit_on = "oof" if "oof" in frames else "valid"
    if fit_on not in frames:
        raise ValueError(f"{run.path.name} has no {fit_on} predictions to fit a temperature on")
    t = None if off else calibration.fit_on_frame(frames[fit_on], classes, fit_on)
    if t is not None:
        frames = {k: calibration.scale_frame(v, classes, t.temperature) for k, v in frames.items()}
    for name, frame in frames.items():
        frame.to_csv(run.predictions(name), index=False)
    summary.pop(calibration.SUMMARY_KEY, None)
    run.write(rundir.METRICS, {**summary, **summary_entry(t)})
    stamp_models(run, frames[fit_on], classes, fit_on, t)
    return t
