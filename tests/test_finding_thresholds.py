"""Per-finding thresholds of a multi-label model (issue 25): the rule thresholds and metrics measured on validation
predictions only, decisions at a chosen {finding: threshold} dict, and `predict --thresholds` with its refusals, all on
planted probabilities (a model whose outputs are fixed at 0.5 decides by the thresholds alone)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.cli import main
from core.evaluation import finding_thresholds as ft
from core.evaluation import multilabel

FINDINGS = ["a", "b", "c"]


def _frame(p_a: list[float], labels: list[str]) -> pd.DataFrame:
    """A labelled multi-label predictions table: finding a at the given probabilities, b and c at 0.5."""
    probs = np.stack([p_a, [0.5] * len(p_a), [0.5] * len(p_a)], 1)
    return multilabel.predictions_frame([f"x{i}.png" for i in range(len(p_a))], probs, FINDINGS).assign(
        label=labels
    )


def test_rule_thresholds_and_metrics_come_from_validation_only():
    # validation: a present in 4 images (0.9, 0.8, 0.7, 0.3), absent in 4 (0.6, 0.2, 0.1, 0.05); one uncertain
    valid = _frame(
        [0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05, 0.99],
        ["a", "a|b", "a", "a", "b", "(no finding)", "c", "b|c", "?a"],
    )
    test = _frame([0.01] * 9, ["a"] * 9)  # a test set that would give other thresholds: never used
    name, df = ft.validation_set({"valid": valid, "test": test})
    assert name == "valid" and len(df) == 9
    assert ft.validation_set({"oof": valid, "valid": test})[0] == "oof"  # k-fold: out-of-fold
    assert ft.validation_set({"test": test}) is None
    rules = ft.rule_thresholds(df, FINDINGS, "a", chosen=0.65)
    assert rules == {"sens90": 0.3, "youden": 0.7, "chosen": 0.65, "default": 0.5}
    m = ft.metrics_at(df, FINDINGS, "a", 0.7)  # the uncertain image is left out: 8 images
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 0, 4)
    assert m["sensitivity"] == 0.75 and m["specificity"] == 1.0 and m["ppv"] == 1.0 and m["npv"] == 0.8
    low = ft.metrics_at(df, FINDINGS, "a", 0.7, prevalence=0.1)
    assert low["ppv"] == 1.0 and low["npv"] == pytest.approx(0.9 / (0.9 + 0.1 * 0.25))
    only_b = ft.rule_thresholds(df, FINDINGS, "c", None)  # c: both sides, but every probability 0.5
    assert only_b["default"] == 0.5 and "chosen" not in only_b
    one_side = _frame([0.9, 0.8], ["a", "a"])
    assert set(ft.rule_thresholds(one_side, FINDINGS, "a", 0.4)) == {"chosen", "default"}


def test_decisions_and_the_per_finding_table_at_a_thresholds_dict():
    df = _frame([0.9, 0.6, 0.2], ["a", "b", "(no finding)"])
    thresholds = ft.merged({"a": 0.5, "b": 0.7, "c": 0.5}, {"a": 0.65, "b": 0.4}, FINDINGS)
    assert thresholds == {"a": 0.65, "b": 0.4, "c": 0.5}
    out = ft.decide(df, FINDINGS, thresholds)
    assert out["pred_a"].tolist() == [1, 0, 0] and out["pred_b"].tolist() == [1, 1, 1]
    assert out["pred"].tolist() == ["a|b|c", "b|c", "b|c"]  # c: 0.5 >= 0.5
    assert out["threshold"].iloc[0] == "a=0.650; b=0.400; c=0.500"
    table = ft.summary_table(df, FINDINGS, thresholds).set_index("finding")
    assert table.loc["a", ["tp", "fn", "fp", "tn"]].tolist() == [1, 0, 0, 2]
    assert table.loc["b", "sensitivity"] == 1.0 and table.loc["b", "specificity"] == 0.0


@pytest.mark.parametrize(
    "text, why",
    [
        ("x=0.3", "'x' is not a finding of this model (its findings: a, b, c)"),
        ("a=1", "must lie strictly between 0 and 1, got 1"),
        ("a=0", "strictly between 0 and 1"),
        ("a=-0.2", "strictly between 0 and 1"),
        ("a=nan", "strictly between 0 and 1"),
        ("a=high", "'high', not a number"),
        ("a0.3", "is not FINDING=VALUE"),
        (" , ", "no FINDING=VALUE pair given"),
    ],
)
def test_a_thresholds_override_is_refused_with_a_plain_reason(text, why):
    with pytest.raises(ValueError) as err:
        ft.parse(text, FINDINGS)
    assert why in str(err.value)
    assert ft.parse("a=0.3, c = 0.75", FINDINGS) == {"a": 0.3, "c": 0.75}


@pytest.fixture
def half_model(tmp_path):
    """A saved multi-label model whose every probability is 0.5 (zeroed head) with thresholds a 0.3, b 0.3, c 0.7."""
    from core.models import archs
    from core.models.savedmodel import Manifest, save_model

    torch.manual_seed(0)
    model = archs.create_model("resnet18", 3).eval()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()  # fastai's head: no bias after its last batch norm, so every logit is 0
        if last.bias is not None:
            last.bias.zero_()
    task = {"type": "multilabel", "thresholds": {"a": 0.3, "b": 0.3, "c": 0.7}}
    save_model(model, tmp_path / "model", Manifest(arch="resnet18", classes=FINDINGS, img_size=32, task=task))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"x{i}.png")
    return tmp_path / "model", images


def test_predict_thresholds_override_the_saved_ones(half_model, tmp_path, capsys):
    model, images = half_model
    out = tmp_path / "p.csv"
    argv = ["predict", "--model", str(model), str(images), "--out", str(out)]
    assert main(argv) == 0
    saved = pd.read_csv(out, keep_default_na=False)
    assert saved["pred"].unique().tolist() == ["a|b"]  # 0.5 >= 0.3, 0.3; < 0.7
    capsys.readouterr()
    assert main([*argv, "--thresholds", "b=0.6,c=0.45"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["thresholds"] == {"a": 0.3, "b": 0.6, "c": 0.45}
    again = pd.read_csv(out, keep_default_na=False)
    assert again["pred"].unique().tolist() == ["a|c"]
    assert again["threshold"].iloc[0] == "a=0.300; b=0.600; c=0.450"
    for bad, why in [
        ("d=0.4", "'d' is not a finding of this model"),
        ("b=1.5", "strictly between 0 and 1"),
    ]:
        assert main([*argv, "--thresholds", bad]) == 1
        assert why in capsys.readouterr().err
    assert main([*argv, "--thresholds", "b=0.6", "--threshold", "0.4"]) == 1
    assert "not both" in capsys.readouterr().err
