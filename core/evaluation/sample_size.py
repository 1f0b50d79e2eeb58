"""How big a test set must be for a chosen CI width of the headline metric (CLAIM: sample size), kept simple.

Normal approximations, stated as such: a proportion (accuracy, sensitivity, specificity) needs
n = z^2 p (1 - p) / h^2 images (h = the CI's half-width); ROC AUC uses Hanley & McNeil's (1982) standard error
with the positives' share fixed. Both use the value observed now, so they are a plan for the next test set,
not a guarantee; patient clustering (several images per patient) makes the real need larger.
"""

from __future__ import annotations

import math

from scipy.stats import norm

from core.evaluation.evaluate import CI_LEVEL


def _z(level: float) -> float:
    """The two-sided normal quantile of a confidence level."""
    return float(norm.ppf(1 - (1 - level) / 2))


def n_for_proportion(p: float, half_width: float, level: float = CI_LEVEL) -> int:
    """Images needed so that a proportion near p has a CI of +/- half_width (normal approximation)."""
    p = min(max(float(p), 0.01), 0.99)  # at 0 or 1 the approximation says 0: plan for a little uncertainty
    return math.ceil(_z(level) ** 2 * p * (1 - p) / half_width**2)


def auc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil's standard error of an ROC AUC with n_pos positives and n_neg negatives."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def n_for_auc(auc: float, half_width: float, positive_share: float, level: float = CI_LEVEL) -> int:
    """Images needed (positives at `positive_share`) so that an ROC AUC near `auc` has a CI of +/- half_width."""
    auc = min(max(float(auc), 0.51), 0.99)
    z, n = _z(level), 10
    while (
        z * auc_se(auc, max(1, round(n * positive_share)), max(1, round(n * (1 - positive_share))))
        > half_width
    ):
        n = math.ceil(n * 1.05) + 1
        if n > 10_000_000:
            break
    return n


def plan_text(
    metric: str, value: float, half_width: float, n_now: int, positive_share: float | None = None
) -> str:
    """One sentence for the checklist / report: the test-set size for +/- half_width, against the one used."""
    if metric == "roc_auc" and positive_share:
        n = n_for_auc(value, half_width, positive_share)
        how = f"Hanley-McNeil, {positive_share:.0%} positive"
    else:
        n = n_for_proportion(value, half_width)
        how = "normal approximation"
    return (
        f"for a 95 % CI of +/- {half_width:g} on {metric.replace('_', ' ')} near {value:.3f}: about {n} test images "
        f"({how}; more when patients have several images); this test set has {n_now}"
    )
