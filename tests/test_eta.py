"""Time estimates from progress fields."""

from __future__ import annotations

import pytest

from core.base.eta import eta, folds_eta, job_eta, step_fraction
from core.runs.progress import ProgressRecord

rec = ProgressRecord.from_dict  # the estimators read a progress record


def test_eta_and_fractions():
    assert eta(None, 1, 10) is None and eta(5.0, 0, 10) is None
    assert eta(10.0, 2, 10) == pytest.approx(40.0)
    assert eta(10.0, 12, 10) == 0.0
    assert step_fraction(rec({"elapsed_s": 30.0, "eta_s": 90.0})) == pytest.approx(0.25)
    assert step_fraction(rec({"epoch": 1, "n_epochs": 4, "batch": 5, "n_batches": 10})) == pytest.approx(
        0.375
    )
    assert step_fraction(rec({})) is None


def test_job_eta_counts_the_folds_still_to_come():
    prog = rec({"n_folds": 5, "fold": 1, "elapsed_s": 30.0, "eta_s": 30.0})  # fold 2 of 5, half done
    assert job_eta(prog, 150.0) == pytest.approx(150.0 / 1.5 * 3.5)
    assert (
        job_eta(rec({"n_folds": 0}), 10.0) is None and job_eta(rec({"n_folds": 3, "fold": 0}), 10.0) is None
    )


def test_folds_eta_of_folds_running_side_by_side():
    running = [
        ("running", rec({"elapsed_s": 10.0, "eta_s": 30.0})),
        ("running", rec({"elapsed_s": 20.0, "eta_s": 20.0})),
    ]
    assert folds_eta(running) == pytest.approx(30.0)  # the slowest running fold
    assert folds_eta(
        [*running, ("queued", rec({})), ("queued", rec({})), ("queued", rec({}))]
    ) == pytest.approx(30.0 + 2 * 40.0)
    assert folds_eta([("running", rec({"phase": "scanning"})), ("queued", rec({}))]) is None  # no pace yet
    assert (
        folds_eta([("done", rec({})), ("done", rec({}))]) == 0.0 and folds_eta([("queued", rec({}))]) is None
    )
