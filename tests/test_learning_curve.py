"""The learning-curve forecast: a curve generated from a known inverse power law is recovered, too few train
fractions are refused, and a sweep's trial table gives the forecast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.evaluation import learning_curve as lc


def test_a_known_law_is_recovered_and_forecast():
    a, b, c = 0.92, 0.25, 0.6
    f = np.repeat([0.125, 0.25, 0.5, 1.0], 3)  # 3 seeds per fraction
    noise = np.random.default_rng(0).normal(0, 0.004, len(f))
    out = lc.forecast(f, lc.law(f, a, b, c) + noise, n_boot=100)
    assert out["params"]["a"] == pytest.approx(a, abs=0.03)
    assert out["params"]["c"] == pytest.approx(c, abs=0.2)
    for entry in out["forecast"]:
        truth = lc.law(np.array(entry["multiple"]), a, b, c)
        assert entry["value"] == pytest.approx(truth, abs=0.01)
        assert (
            entry["lo"] <= entry["value"] <= entry["hi"] and entry["lo"] - 0.01 <= truth <= entry["hi"] + 0.01
        )
    assert [e["multiple"] for e in out["forecast"]] == [1.0, 2.0, 4.0]
    widths = [e["hi"] - e["lo"] for e in out["forecast"]]
    assert widths[2] >= widths[0]  # further out, less sure
    assert "Extrapolation" in out["caveat"] and len(out["curve"]) == 40


def test_too_few_fractions_are_refused():
    f = np.array([0.25, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="at least 4 different train fractions"):
        lc.forecast(f, np.array([0.7, 0.8, 0.85, 0.86]))


def test_a_sweeps_trial_table_gives_the_forecast_or_the_reason():
    f = [0.125, 0.25, 0.5, 1.0, 1.0]
    table = pd.DataFrame(
        {
            "train_fraction": f + [0.75],
            "status": ["done"] * 5 + ["failed"],
            "roc_auc": list(lc.law(np.array(f), 0.9, 0.2, 0.5)) + [np.nan],
        }
    )
    out = lc.from_trials(table, "roc_auc", n_boot=50)
    assert out is not None and out["n_points"] == 5 and out["metric"] == "roc_auc"
    assert out["forecast"][1]["value"] == pytest.approx(lc.law(np.array(2.0), 0.9, 0.2, 0.5), abs=0.01)
    refused = lc.from_trials(table.iloc[2:], "roc_auc")
    assert refused is not None and "at least 4" in refused["refused"]
    assert lc.from_trials(table.drop(columns="train_fraction"), "roc_auc") is None  # not a fraction sweep
