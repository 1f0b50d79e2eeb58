"""Top losses, confusion-matrix cells and suspect labels of multi-label and ordinal runs (core.evaluation.taskerrors),
each decided by planted predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.evaluation import multilabel, ordinal, taskerrors

FINDINGS = ["Effusion", "Mass"]
GRADES = ["KL0", "KL1", "KL2", "KL3", "KL4"]


def _ml(labels: list[str], probs: list[list[float]], **extra) -> pd.DataFrame:
    """A labelled multi-label predictions table decided at 0.5."""
    df = multilabel.predictions_frame([f"img{i}.png" for i in range(len(labels))], np.array(probs), FINDINGS)
    return df.assign(label=labels, **extra)


def _od(labels: list[str], grade_probs: list[list[float]]) -> pd.DataFrame:
    """A labelled ordinal predictions table."""
    paths = [f"img{i}.png" for i in range(len(labels))]
    return ordinal.predictions_frame(paths, np.array(grade_probs), GRADES).assign(label=labels)


def test_multilabel_top_losses_rank_by_mean_bce_over_known_findings():
    df = _ml(
        ["Effusion", "(no finding)", "Effusion|Mass", "?Effusion|Mass"],
        [[0.9, 0.1], [0.8, 0.1], [0.6, 0.4], [0.01, 0.9]],
    )
    out = taskerrors.multilabel_losses(df, FINDINGS)
    assert out["path"].tolist() == ["img1.png", "img2.png", "img0.png", "img3.png"]
    expected = -(np.log(0.2) + np.log(0.9)) / 2  # img1: Effusion wrongly high, Mass rightly low
    assert out["loss"].iloc[0] == pytest.approx(expected)
    # img3's uncertain Effusion (prob 0.01) counts for nothing: only Mass (0.9, present) is scored
    assert out.loc[out["path"] == "img3.png", "loss"].item() == pytest.approx(-np.log(0.9))
    assert out.loc[out["path"] == "img1.png", "wrong"].item() == "Effusion"
    assert out.loc[out["path"] == "img2.png", "wrong"].item() == "Mass"
    errors = taskerrors.multilabel_losses(df, FINDINGS, errors_only=True)
    assert set(errors["path"]) == {"img1.png", "img2.png"} and errors["rank"].tolist() == [1, 2]
    assert taskerrors.shown_findings("Effusion|Mass") == "Effusion, Mass"


def test_a_findings_2x2_table_opens_into_its_images():
    df = _ml(
        ["Effusion", "Effusion", "(no finding)", "(no finding)", "Mass", "?Effusion"],
        [[0.9, 0.1], [0.2, 0.1], [0.7, 0.1], [0.1, 0.2], [0.3, 0.8], [0.9, 0.1]],
    )
    assert taskerrors.finding_confusion(df, FINDINGS, "Effusion") == [[2, 1], [1, 1]]  # [[TN, FP], [FN, TP]]
    assert taskerrors.finding_cell(df, FINDINGS, "Effusion", 1, 1)["path"].tolist() == ["img0.png"]
    assert taskerrors.finding_cell(df, FINDINGS, "Effusion", 0, 1)["path"].tolist() == ["img2.png"]
    assert taskerrors.finding_cell(df, FINDINGS, "Effusion", 1, 0)["path"].tolist() == ["img1.png"]
    tn = taskerrors.finding_cell(df, FINDINGS, "Effusion", 0, 0)  # the uncertain img5 is in no cell
    assert tn["path"].tolist() == ["img4.png", "img3.png"]  # highest Effusion loss first (0.3 before 0.1)
    assert tn["loss"].iloc[0] == pytest.approx(-np.log(0.7))
    with pytest.raises(ValueError, match="unknown finding"):
        taskerrors.finding_cell(df, FINDINGS, "Nodule", 1, 1)


def _learned_findings(n: int = 40, flipped: int = 3) -> pd.DataFrame:
    """Effusion predicted well except `flipped` images whose given label contradicts a confident model."""
    rng = np.random.default_rng(0)
    present = np.arange(n) % 2 == 0
    p = np.where(present, rng.uniform(0.8, 0.95, n), rng.uniform(0.05, 0.2, n))
    labels = np.where(present, "Effusion", "(no finding)").astype(object)
    labels[:flipped] = np.where(present[:flipped], "(no finding)", "Effusion")  # planted label errors
    return _ml(list(labels), np.stack([p, np.full(n, 0.1)], 1).tolist())


def test_suspect_findings_put_the_planted_label_errors_first():
    df = _learned_findings()
    out = taskerrors.finding_suspects(df, FINDINGS, "Effusion")
    assert set(out["path"].head(3)) == {"img0.png", "img1.png", "img2.png"}
    flagged = set(out.loc[out["issue"], "path"])  # cleanlab's (or the built-in) decision: planted ones only
    assert flagged and flagged <= {"img0.png", "img1.png", "img2.png"}
    row = out[out["path"] == "img0.png"].iloc[0]  # given absent, the model is sure it is present
    assert (row["given"], row["suggested"]) == ("absent", "present") and row["p_given"] < 0.2
    assert taskerrors.finding_withheld(df, FINDINGS, "Effusion", None, "out-of-fold") is None


def test_suspect_findings_are_withheld_when_the_finding_was_not_learned():
    rng = np.random.default_rng(1)
    n = 40
    labels = ["Effusion" if i % 2 else "(no finding)" for i in range(n)]
    df = _ml(labels, np.stack([rng.uniform(0.3, 0.7, n), np.full(n, 0.1)], 1).tolist())
    ci = {"value": 0.5, "lo": 0.35, "hi": 0.66}  # the finding's AUC interval includes chance
    why = taskerrors.finding_withheld(df, FINDINGS, "Effusion", ci, "out-of-fold")
    assert why is not None and why.startswith("for Effusion") and "0.5" in why


def test_ordinal_top_losses_grow_with_the_distance_to_the_true_grade():
    near = [0.05, 0.85, 0.05, 0.03, 0.02]  # surely KL1
    far = [0.02, 0.03, 0.05, 0.05, 0.85]  # surely KL4
    df = _od(["KL0", "KL3", "KL1"], [near, far, near])
    out = taskerrors.ordinal_losses(df, GRADES)
    assert out["path"].tolist()[-1] == "img2.png"  # the right grade has the lowest loss
    assert out["grade_error"].tolist() == [1, 1, 0]
    exceed = 1 - np.cumsum(near)[:-1]  # P(grade > k) of the "near" row against the true grade 0
    assert out["loss"].iloc[0] == pytest.approx(-np.log(1 - exceed).sum())
    df2 = _od(["KL0", "KL3"], [far, near])  # 4 grades off vs 2 grades off
    ranked = taskerrors.ordinal_losses(df2, GRADES)
    assert ranked["path"].tolist() == ["img0.png", "img1.png"] and ranked["grade_error"].tolist() == [4, 2]
    assert taskerrors.ordinal_losses(df2, GRADES, errors_only=True)["correct"].sum() == 0


def test_grade_suspects_rank_by_the_expected_grade_distance():
    probs = [[0.0, 0.0, 0.1, 0.2, 0.7], [0.6, 0.4, 0, 0, 0], [0, 0, 1.0, 0, 0]]
    df = _od(["KL0", "KL1", "KL2"], probs)
    out = taskerrors.grade_suspects(df, GRADES)
    assert out["path"].tolist() == ["img0.png", "img1.png", "img2.png"]
    assert out["distance"].tolist() == pytest.approx([3.6, 0.6, 0.0])
    assert out["suggested"].tolist() == ["KL4", "KL0", "KL2"]
    assert out["issue"].tolist() == [True, False, False]


def test_top_losses_dispatch_by_task_leaves_unlabelled_rows_out():
    ml = pd.concat([_ml(["Mass"], [[0.2, 0.9]]), _ml([""], [[0.5, 0.5]])], ignore_index=True)
    assert len(taskerrors.top_losses(ml, FINDINGS, "multilabel")) == 1
    od = _od(["KL2", ""], [[0, 0, 1.0, 0, 0]] * 2)
    assert taskerrors.top_losses(od, GRADES, "ordinal")["label"].tolist() == ["KL2"]


def test_the_report_table_of_top_losses_names_files_only_and_decides_at_the_sets_thresholds():
    df = _ml(["Effusion", "(no finding)"], [[0.6, 0.1], [0.2, 0.3]])
    df["path"] = ["/data/site/img0.png", "C:\\data\\img1.png"]
    set_ev = {"task": "multilabel", "classes": FINDINGS, "thresholds": {"Effusion": 0.7, "Mass": 0.25}}
    table = taskerrors.loss_table(set_ev, df)
    assert set(table["file"]) == {"img0.png", "img1.png"}
    row = table.set_index("file").loc["img0.png"]
    assert (row["true"], row["predicted"], row["wrong"]) == (
        "Effusion",
        "(no finding)",
        "Effusion",
    )  # 0.6 < 0.7
    assert table.set_index("file").loc["img1.png", "wrong"] == "Mass"  # 0.3 >= 0.25
    od = taskerrors.loss_table({"task": "ordinal", "classes": GRADES}, _od(["KL0"], [[0, 0, 0, 0, 1.0]]))
    assert list(od.columns) == ["rank", "file", "true", "predicted", "expected_grade", "grade_error", "loss"]
    assert od["grade_error"].tolist() == [4]
