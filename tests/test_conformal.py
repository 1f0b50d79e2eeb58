"""Split-conformal prediction sets: coverage as promised on generated data, Mondrian per class, referral, the
abstain band, the saved-model record, Predict's set/refer columns, the report and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.evaluation import conformal, evaluate
from core.evaluation.conformal import SetRule
from tests.test_calibration import planted


def imbalanced(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated 3-class probabilities with a rare, hard class 2 (labels drawn from the probabilities)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.2, (n, 3)) + np.array([1.0, 0.6, -1.0])
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (rng.random(n)[:, None] > p.cumsum(1)).sum(1)
    return y, p


@pytest.mark.parametrize("target", [0.90, 0.95])
def test_lac_coverage_on_a_large_test_set_is_within_two_points_of_the_target(target):
    y_cal, p_cal = planted(2000, 1.0, seed=10)
    y, p = planted(20000, 1.0, seed=11)
    cal = conformal.calibrate(y_cal, p_cal, ["a", "b", "c"], "valid")
    assert cal is not None and cal.n == 2000
    rep = conformal.coverage_report(y, p, cal, SetRule(target), n_resamples=100)
    assert abs(rep["coverage"]["value"] - target) < 0.02
    assert rep["coverage"]["lo"] < rep["coverage"]["value"] < rep["coverage"]["hi"]
    assert 0 < rep["referral_rate"]["value"] < 1
    assert rep["accuracy_answered"]["value"] > (p.argmax(1) == y).mean()  # the answered are the surer ones


def test_mondrian_keeps_the_coverage_within_each_class_where_marginal_does_not():
    y_cal, p_cal = imbalanced(6000, seed=12)
    y, p = imbalanced(20000, seed=13)
    cal = conformal.calibrate(y_cal, p_cal, ["a", "b", "rare"], "valid")
    assert cal is not None
    marginal = conformal.coverage_report(y, p, cal, SetRule(0.9), n_resamples=50)
    mondrian = conformal.coverage_report(y, p, cal, SetRule(0.9, mondrian=True), n_resamples=50)
    assert abs(marginal["coverage"]["value"] - 0.9) < 0.02
    assert marginal["coverage_per_class"]["rare"] < 0.85  # the rare class is under-covered marginally
    assert all(abs(v - 0.9) < 0.03 for v in mondrian["coverage_per_class"].values())


def test_aps_covers_at_least_the_target_and_sets_are_nested():
    y_cal, p_cal = planted(2000, 1.0, seed=14)
    y, p = planted(20000, 1.0, seed=15)
    cal = conformal.calibrate(y_cal, p_cal, ["a", "b", "c"], "oof")
    assert cal is not None
    cov = conformal.coverage_report(y, p, cal, SetRule(0.9, "aps"), n_resamples=20)["coverage"]["value"]
    assert 0.88 < cov < 0.96
    small = conformal.prediction_sets(p, cal, 0.8, "aps")
    large = conformal.prediction_sets(p, cal, 0.95, "aps")
    assert (large >= small).all()  # more coverage never drops a class


def test_set_and_refer_columns_and_the_manifest_record():
    classes = ["a", "b", "c"]
    names, refer = conformal.set_columns(np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], bool), classes)
    assert names == ["a", "a|b", ""] and refer.tolist() == [False, True, True]
    y, p = planted(100, 1.0, seed=16)
    cal = conformal.calibrate(y, p, classes, "valid")
    assert cal is not None
    again = conformal.Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    assert conformal.calibrate(y[:0], p[:0], classes, "valid") is None
    with pytest.raises(ValueError, match="coverage"):
        conformal.prediction_sets(p, cal, 90)
    with pytest.raises(ValueError, match="unknown conformal method"):
        conformal.class_scores(p, "raps")
    tiny = conformal.calibrate(y[:20], p[:20], classes, "valid")
    assert (
        tiny is not None and conformal.prediction_sets(p, tiny, 0.96).all()
    )  # 20 scores < 96 %: every class
    assert not conformal.prediction_sets(p, tiny, 0.95).all()  # the 20th of 20 is the 95 % quantile


def test_abstain_band_refers_the_uncertain_middle():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.45, 0.55, 0.9, 0.6, 0.4])  # the middle four are near 0.5; two of them wrong
    table = conformal.abstain_band(y, p, 0.5, widths=[0.0, 0.2])
    none, band = table.iloc[0], table.iloc[1]
    assert none["referral_rate"] == 0 and none["accuracy_answered"] == pytest.approx(4 / 6)
    assert band["referral_rate"] == pytest.approx(4 / 6) and band["accuracy_answered"] == 1.0
    assert band["band"] == "0.30-0.70"


def fake_single_run(root):
    """A finished binary run folder with valid and test predictions, no models (no training)."""
    root.mkdir(parents=True)
    classes = ["a", "b"]
    for name, seed in (("valid", 20), ("test", 21)):
        y, p = planted(300, 1.0, seed=seed, n_classes=2)
        paths = [f"/nowhere/{name}{i}.png" for i in range(300)]
        evaluate.predictions_frame(paths, y, p, classes).to_csv(root / f"{name}_predictions.csv", index=False)
    (root / "metrics.json").write_text(json.dumps({"type": "single", "classes": classes, "metrics": {}}))
    return root


def test_report_shows_coverage_and_referral_on_the_test_set(tmp_path):
    from core.evaluation.report import build_report

    run = fake_single_run(tmp_path / "run")
    rep = build_report(run, tmp_path / "rep", n_resamples=50, png=False)
    sets = rep["prediction_sets"]
    assert [s["rule"]["coverage"] for s in sets] == [0.9, 0.95, 0.9] and sets[2]["rule"]["mondrian"]
    assert set(sets[0]["sets"]) == {"test"} and sets[0]["calibrated_on"] == "valid"
    assert abs(sets[0]["sets"]["test"]["coverage"]["value"] - 0.9) < 0.06  # 300 images: a loose check
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Prediction sets and referral" in page and "Abstain band" in page
    table = conformal.report_table(sets)
    assert len(table) == 3 and "referred" in table


@pytest.mark.slow
def test_evaluation_page_shows_coverage_and_referral_for_the_chosen_rule(tmp_path):
    from core.base.config import RunConfig, to_dict
    from tests.test_app_eval_predict import EVAL, app, register

    register(fake_single_run(tmp_path / "run"), to_dict(RunConfig()))
    at = app(EVAL).run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "referred" in d.value)
    assert table["rule"].iloc[0] == "90% coverage, LAC score, marginal" and table["set"].iloc[0] == "test"
    at.slider(key="ev_coverage").set_value(0.95).run()
    at.checkbox(key="ev_mondrian").check().run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "referred" in d.value)
    assert table["rule"].iloc[0] == "95% coverage, LAC score, class-conditional (Mondrian)"
    assert any("exchangeable" in c.value for c in at.caption)
    assert any("Abstain band" in e.label for e in at.expander)
