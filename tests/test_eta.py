"""Time estimates from progress fields."""

from __future__ import annotations

import pytest

from core.base.eta import EpochPace, Rate, eta, folds_eta, job_eta, step_fraction
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


def _scripted_fit(pace, epoch_lengths, n_batches=10, valid=0.0):
    """Feed `pace` a fit whose epochs' batches take the given seconds, each epoch then validating for `valid`
    seconds; the estimate after each batch, with the true time left."""
    total, now, out = sum(epoch_lengths) + valid * len(epoch_lengths), 0.0, []
    for e, length in enumerate(epoch_lengths):
        for b in range(1, n_batches + 1):
            now += length / n_batches
            out.append((e, b, pace.tick(now, e, b / n_batches), total - now))
        now += valid
        pace.end(now)
    return out


def test_epoch_pace_sets_the_slow_first_epoch_apart():
    lengths = [60.0] + [3.0] * 9  # epoch 1 fills the decode cache; the other nine take 3 s each
    est = _scripted_fit(EpochPace(len(lengths), t0=0.0), lengths)
    after_two = next((left, truth) for e, b, left, truth in est if e == 2 and b == 1)
    assert after_two[0] == pytest.approx(after_two[1], rel=0.2)  # the old average said ~5x too much
    assert eta(63.0 + 0.3, 2.1, 10) > 4 * after_two[1]
    for e, _, left, truth in est:
        if e >= 2:
            assert left == pytest.approx(truth, rel=0.2, abs=1.0)
    assert est[-1][2] == pytest.approx(0.0, abs=1e-9)


def test_epoch_pace_follows_a_change_of_speed_and_starts_without_history():
    pace = EpochPace(6, t0=0.0)
    assert pace.tick(5.0, 0, 0.5) == pytest.approx(5.0 + 5 * 10.0)  # first epoch only: its own pace
    est = _scripted_fit(EpochPace(6, t0=0.0), [20.0, 2.0, 2.0, 6.0, 6.0, 6.0])  # unfrozen epochs are slower
    left = next(v for e, b, v, _ in est if e == 5 and b == 5)
    assert left == pytest.approx(3.0, rel=0.2)
    r = Rate(alpha=0.5)
    assert r.left(3) is None
    r.add(10.0, 5)
    r.add(4.0, 1)
    assert r.value == pytest.approx(3.0) and r.left(2) == pytest.approx(6.0)


def test_epoch_pace_counts_validation_time_the_batches_do_not_show():
    lengths = [40.0] + [2.0] * 7  # training batches; each epoch then validates for 1 s (the first included)
    est = _scripted_fit(EpochPace(len(lengths), t0=0.0), lengths, valid=1.0)
    for e, _, left, truth in est:
        if e >= 2:
            assert left == pytest.approx(truth, rel=0.2, abs=1.0)
