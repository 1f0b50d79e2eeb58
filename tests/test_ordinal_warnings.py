"""An ordinal run whose grades agree with the given ones no better than chance says so (QWK's CI reaches 0), even when
it does not predict one grade for everything; a run that grades well gets no warning. Planted predictions only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.evaluation import evaluate, ordinal

GRADES = ["KL0", "KL1", "KL2", "KL3", "KL4"]


def _frame(y: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """A labelled ordinal predictions table whose probabilities put 0.9 on `pred` (the rest spread evenly)."""
    probs = np.full((len(y), len(GRADES)), 0.1 / (len(GRADES) - 1))
    probs[np.arange(len(y)), pred] = 0.9
    df = ordinal.predictions_frame([f"img{i}.png" for i in range(len(y))], probs, GRADES)
    df["label"] = [GRADES[i] for i in y]
    return df


def test_grades_independent_of_the_truth_are_called_chance():
    y = np.tile(np.arange(5), 20)  # every grade 20 times
    # every grade predicted 20 times, each pairing equally often: QWK exactly 0
    pred = np.repeat(np.arange(5), 20)
    df = _frame(y, pred)
    assert ordinal.qwk(y, pred, 5) == 0.0
    warnings = ordinal.frame_warnings(df, GRADES)
    assert any("weighted kappa is 0.00" in w and "no better than chance" in w for w in warnings)
    assert warnings[-1] == evaluate.ADVICE and not any("predicts one class" in w for w in warnings)


def test_a_model_that_grades_well_gets_no_warning():
    y = np.tile(np.arange(5), 20)
    pred = y.copy()
    pred[::10] = np.clip(pred[::10] + 1, 0, 4)  # a few off by one
    assert ordinal.frame_warnings(_frame(y, pred), GRADES) == []


def test_one_grade_for_everything_gives_both_sentences_and_the_advice_once():
    y = np.tile(np.arange(5), 20)
    warnings = ordinal.frame_warnings(_frame(y, np.full(100, 2)), GRADES)
    assert sum("no better than chance" in w for w in warnings) == 1 and "KL2" in warnings[0]
    assert warnings.count(evaluate.ADVICE) == 1 and warnings[-1] == evaluate.ADVICE
