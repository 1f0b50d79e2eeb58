"""What mattered in a sweep: each swept setting's importance (with how far to trust it), the best trial's
settings beside the base settings, how far along it is, and the table behind slice / contour plots.
Plain values for the CLI (`runs --experiment`) and the Experiments page; the figures are in plots.py."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from core.base import eta
from core.base.schema import get
from core.runs import jobs
from core.train import sweep_loop, sweep_plan, sweep_search

ENDED = ("done", "pruned", "failed", "cancelled", "interrupted")


def importance(record: dict[str, Any], store: jobs.JobStore) -> dict[str, Any]:
    """{"values": {setting: share}, "finished": n, "note": how far to trust it} ({} values below 3 trials)."""
    spec = sweep_plan.spec_of(record)
    axes = spec.parsed()
    dists = sweep_search.distributions(axes, {a.name: sweep_plan.SETTINGS[a.name].kind for a in axes})
    told = sweep_loop.told(record, store)
    finished = sum(1 for t in told if t.state == "complete" and t.value is not None)
    values = sweep_search.importance(told, dists)
    note = ""
    if not values:
        note = "importance needs at least 3 finished trials with different settings"
    elif finished < sweep_search.IMPORTANCE_MIN_TRIALS:
        note = (
            f"from {finished} finished trials only: importance is unreliable below about "
            f"{sweep_search.IMPORTANCE_MIN_TRIALS}; read it as a hint"
        )
    return {"values": values, "finished": finished, "note": note}


def base_value(record: dict[str, Any], name: str) -> Any:
    """A swept setting's value in the base settings (aug_strength 1, the augmentation preset as chosen)."""
    setting = sweep_plan.SETTINGS[name]
    if setting.path:
        return get(sweep_plan.base_of(record), setting.path)
    return 1.0 if name == "aug_strength" else "as in the base settings"


def best_vs_base(record: dict[str, Any], best_job: str | None) -> list[dict[str, Any]]:
    """One row per swept setting: its base value and the best trial's ([] before a trial finished)."""
    best = next((t for t in record["trials"] if best_job and t.get("job") == best_job), None)
    if best is None:
        return []
    return [
        {"setting": a.name, "base": base_value(record, a.name), "best": best["settings"].get(a.name)}
        for a in sweep_plan.spec_of(record).parsed()
    ]


def progress(record: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Trials planned / ended and the time left at the pace so far (None before one ended)."""
    counts, planned = record.get("counts", {}), sweep_plan.trial_budget(sweep_plan.spec_of(record))
    ended = sum(counts.get(s, 0) for s in ENDED)
    if sweep_loop.closed(record, now):
        planned = len([t for t in record["trials"] if t.get("job")])
    elapsed = (now or time.time()) - float(record.get("created") or 0)
    return {"planned": planned, "ended": ended, "eta_s": eta.eta(elapsed, ended, planned)}


def slice_table(table: pd.DataFrame, metric: str, names: list[str]) -> pd.DataFrame:
    """The finished trials' swept settings and metric (what slice and contour plots draw)."""
    done = table[(table["status"] == "done") & table[metric].notna()] if len(table) else table
    cols = [n for n in names if n in done.columns]
    return done[["trial", *cols, metric]].reset_index(drop=True) if len(done) else pd.DataFrame()


def contour_surface(table: pd.DataFrame, x: str, y: str, metric: str) -> dict[str, Any] | None:
    """The metric interpolated (linear) over two numeric swept settings from the finished trials, on a 40 x 40
    grid, log-spaced for wide positive ranges; None below 4 trials, or when the points lie on one line."""
    done = table[table[metric].notna()]
    if len(done) < 4 or done[x].nunique() < 2 or done[y].nunique() < 2:
        return None
    from scipy.interpolate import griddata

    logs = {a: bool((done[a] > 0).all() and done[a].max() / done[a].min() >= 10) for a in (x, y)}
    px, py = (np.log10(done[a]) if logs[a] else done[a].astype(float) for a in (x, y))
    gx, gy = np.linspace(px.min(), px.max(), 40), np.linspace(py.min(), py.max(), 40)
    with np.errstate(all="ignore"):
        try:
            z = griddata((px, py), done[metric], tuple(np.meshgrid(gx, gy)), method="linear")
        except ValueError:  # points on one line (scipy's Qhull): no surface to draw
            return None
    cx, cy = (10**g if logs[a] else g for g, a in ((gx, x), (gy, y)))
    return {"x": cx, "y": cy, "z": z, "log_x": logs[x], "log_y": logs[y]}
