"""Suspect labels are withheld when the out-of-fold model is no better than chance (issue 28 item 2)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.evaluation import checks, evaluate

CLASSES = ["NORMAL", "PNEUMONIA"]


def _oof(p1: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """An out-of-fold predictions table with these planted positive-class probabilities."""
    paths = [f"img{i}.png" for i in range(len(y))]
    return evaluate.predictions_frame(paths, y, np.c_[1 - p1, p1], CLASSES, fold=np.arange(len(y)) % 3)


def test_a_model_that_separates_the_classes_gives_evidence():
    y = np.r_[np.zeros(100, int), np.ones(200, int)]
    p1 = np.where(y == 1, 0.8, 0.2) + np.random.default_rng(0).normal(0, 0.1, len(y))
    assert checks.suspects_withheld(_oof(np.clip(p1, 0.01, 0.99), y), CLASSES) is None


def test_a_one_class_model_is_withheld_even_with_a_good_auc():
    y = np.r_[np.zeros(100, int), np.ones(200, int)]
    p1 = np.where(y == 1, 0.95, 0.6)  # perfect ranking, but everything is called PNEUMONIA at 0.5
    why = checks.suspects_withheld(_oof(p1, y), CLASSES)
    assert why is not None and "100% of the images 'PNEUMONIA'" in why and "one class" in why


def test_a_chance_level_model_is_withheld():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(150, int), np.ones(150, int)]
    p1 = rng.uniform(0.2, 0.8, len(y))  # scores unrelated to the labels, both classes predicted
    why = checks.suspects_withheld(_oof(p1, y), CLASSES)
    assert why is not None and "includes 0.5" in why
    # a CI handed in decides it too: lower bound at 0.5 is not above chance, 0.55 is
    good = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.1, len(y)), 0, 1)
    assert checks.suspects_withheld(_oof(good, y), CLASSES, {"value": 0.6, "lo": 0.5, "hi": 0.7})
    assert checks.suspects_withheld(_oof(good, y), CLASSES, {"value": 0.6, "lo": 0.55, "hi": 0.7}) is None
