"""The threshold chart agrees with the predictions file at every threshold (issue 28 item 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.evaluation import evaluate, report

CLASSES = ["NORMAL", "PNEUMONIA"]


def _planted(tmp_path) -> pd.DataFrame:
    """A saved predictions file whose top scores (0.57 .. 1.0) are all positives: a vertical run on the ROC curve."""
    rng = np.random.default_rng(3)
    pos = np.r_[np.linspace(0.57, 0.999, 27), [0.2, 0.35, 0.5]]
    neg = np.r_[rng.uniform(0.01, 0.56, 45), [0.6, 0.75]]  # two negatives inside the positives' range
    p = np.r_[pos, neg]
    y = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    probs = np.c_[1 - p, p]
    df = evaluate.predictions_frame([f"img{i}.png" for i in range(len(y))], y, probs, CLASSES)
    df.to_csv(tmp_path / "valid_predictions.csv", index=False)
    return pd.read_csv(tmp_path / "valid_predictions.csv")


def _step_value(trace, t: float) -> float:
    """The value a "vh" step line shows at x = t: the y of the first point at or right of t."""
    xs, ys = np.asarray(trace.x, float), np.asarray(trace.y, float)
    assert trace.line.shape == "vh" and np.all(np.diff(xs) > 0)
    return float(ys[np.searchsorted(xs, t, side="left")])


def test_threshold_chart_matches_the_predictions_file_at_every_threshold(tmp_path):
    df = _planted(tmp_path)
    y, probs = evaluate.labels_and_probs(df, CLASSES)
    ev = evaluate.evaluate_predictions(y, probs, CLASSES, threshold=0.699, n_resamples=20)
    fig = report.set_figures("valid", ev, df)["valid_threshold"]
    sens, spec = (next(t for t in fig.data if t.name == n) for n in ("sensitivity", "specificity"))
    p, pos = probs[:, 1], y == 1
    scores = np.unique(p)
    grid = np.unique(np.r_[scores, (scores[1:] + scores[:-1]) / 2, np.linspace(0, 1, 201)])
    for t in grid:
        assert abs(_step_value(sens, t) - (p[pos] >= t).mean()) < 1e-9, t
        assert abs(_step_value(spec, t) - (p[~pos] < t).mean()) < 1e-9, t
    # the operating point the metrics report is the one the chart shows
    at = evaluate.metrics_at_threshold(y, p, 0.699)
    assert abs(_step_value(sens, 0.699) - at["sensitivity"]) < 1e-9 and at["sensitivity"] > 0.5
    assert fig.layout.shapes[0].x0 == 0.699
