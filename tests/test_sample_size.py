"""Test-set size for a chosen CI width: textbook values of the normal approximation and Hanley & McNeil."""

from __future__ import annotations

import pytest

from core.evaluation import sample_size


def test_proportion_sizes_match_the_textbook_formula():
    assert sample_size.n_for_proportion(0.5, 0.05) == 385  # 1.96^2 * 0.25 / 0.05^2 = 384.1
    assert sample_size.n_for_proportion(0.8, 0.05) == 246
    assert sample_size.n_for_proportion(1.0, 0.05) == sample_size.n_for_proportion(0.99, 0.05) > 0


def test_auc_size_meets_the_width_and_the_standard_error_is_hanley_mcneil():
    assert sample_size.auc_se(0.8, 50, 50) == pytest.approx(0.0445, abs=5e-4)
    n = sample_size.n_for_auc(0.85, 0.05, 0.5)
    z = 1.959964
    assert z * sample_size.auc_se(0.85, round(n / 2), round(n / 2)) <= 0.05
    smaller = int(n * 0.9)
    assert (
        z * sample_size.auc_se(0.85, round(smaller / 2), round(smaller / 2)) > 0.05
    )  # not far above the need
    assert sample_size.n_for_auc(0.85, 0.05, 0.1) > n  # rare positives need more images
    text = sample_size.plan_text("roc_auc", 0.85, 0.05, 120, 0.5)
    assert f"about {n} test images" in text and "this test set has 120" in text
