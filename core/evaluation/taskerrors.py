"""Errors per task type: top losses, the images of a confusion-matrix cell and suspect labels of a multi-label or
ordinal run (the single-label ones are core.evaluation.explain.top_losses and core.evaluation.checks.suspect_labels).

Multi-label: an image's loss is its binary cross-entropy averaged over the findings it has a known label for (the
training loss, core.train.losses); a finding's 2x2 table opens into its TP / FP / FN / TN images; suspect labels are
ranked per finding by confident learning on that finding's out-of-fold probability against its given label, one
finding at a time (one-vs-rest, as cleanlab's multi-label filter does; core.evaluation.checks.label_issues: cleanlab
when installed, else its own confident-joint rule). Uncertain labels are left out of all of these.

Ordinal: an image's loss is the cumulative binary cross-entropy over the cut-points P(grade > k) (an ordinal loss:
it grows with the distance to the true grade), shown beside the absolute grade error; suspect labels are ranked by
how far the expected grade lies from the given one, |E[grade] - given grade|, and flagged from SUSPECT_GRADES grades.

Compute only: plain tables in, plain tables out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.data import labels as lab
from core.evaluation import checks, evaluate, multilabel
from core.evaluation.explain import EPS
from core.models.heads import exceed_probs, expected_grade, predicted_grade

SUSPECT_GRADES = 1.0  # an ordinal label is flagged when its expected grade lies this many grades or more away
TOP_LOSSES_SHOWN = 10  # top losses per set in the report
ABSENT, PRESENT = "absent", "present"  # a finding's two sides (the rows / columns of its 2x2 table)
CELL_NAMES = {
    (1, 1): "TP",
    (0, 1): "FP",
    (1, 0): "FN",
    (0, 0): "TN",
}  # (true present, decided present) -> name


def _bce(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Elementwise binary cross-entropy of targets 1 / 0 and probabilities (clipped to [EPS, 1 - EPS])."""
    p = np.clip(p, EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _ranked(out: pd.DataFrame, by: list[str], ascending: list[bool], front: list[str]) -> pd.DataFrame:
    """Rows sorted (stable), numbered from 1 in a `rank` column, the `front` columns first."""
    out = out.sort_values(by, ascending=ascending, kind="stable").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    front = ["rank", *front]
    return out[front + [c for c in out.columns if c not in front]]


def shown_findings(label: str) -> str:
    """A canonical multi-label label in words: its findings joined by commas (uncertain ones marked '?')."""
    return str(label).replace(lab.SEP, ", ")


# ---------------------------------------------------------------- multi-label


def multilabel_losses(df: pd.DataFrame, findings: list[str], errors_only: bool = False) -> pd.DataFrame:
    """Labelled multi-label predictions (decided: pred, pred_<finding>) ranked by per-image BCE, highest first.

    Columns: rank, path, label, pred, loss, wrong (the findings decided wrongly, uncertain ones left out),
    correct (every known finding decided right) and the table's other columns.
    """
    y = lab.target_matrix(df["label"].astype(str), findings)
    p = df[[f"prob_{f}" for f in findings]].to_numpy(dtype=float)
    decided = df[[f"pred_{f}" for f in findings]].to_numpy(dtype=int) == 1
    known = y >= 0
    per = np.where(known, _bce((y == 1).astype(float), p), 0.0)
    n_known = known.sum(1)
    out = df.copy()
    out["loss"] = np.where(n_known > 0, per.sum(1) / np.maximum(n_known, 1), 0.0)
    wrong = (decided != (y == 1)) & known
    out["wrong"] = [", ".join(f for f, w in zip(findings, row) if w) for row in wrong]
    out["correct"] = ~wrong.any(1)
    if errors_only:
        out = out[~out["correct"]]
    return _ranked(out, ["loss"], [False], ["path", "label", "pred", "loss", "wrong", "correct"])


def finding_confusion(df: pd.DataFrame, findings: list[str], finding: str) -> list[list[int]]:
    """One finding's 2x2 table as a confusion matrix (rows true absent / present, columns decided): [[TN, FP], [FN, TP]]."""
    y, decided = _finding_sides(df, findings, finding)
    cm = np.zeros((2, 2), dtype=int)
    np.add.at(cm, (y, decided), 1)
    return cm.tolist()


def _finding_sides(df: pd.DataFrame, findings: list[str], finding: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows with a known label for `finding`: its truth (1 / 0) and decision (1 / 0); -1 rows dropped."""
    y = lab.target_matrix(df["label"].astype(str), findings)[:, findings.index(finding)]
    known = y >= 0
    return (y[known] == 1).astype(int), df[f"pred_{finding}"].to_numpy(dtype=int)[known]


def finding_cell(
    df: pd.DataFrame, findings: list[str], finding: str, true_present: int, decided_present: int
) -> pd.DataFrame:
    """The images of one cell of a finding's 2x2 table, highest loss on that finding first.

    Columns: rank, path, label, pred, prob (of the finding), loss (the finding's BCE), and the table's others.
    """
    if finding not in findings:
        raise ValueError(f"unknown finding {finding!r}; the model's findings are {findings}")
    y = lab.target_matrix(df["label"].astype(str), findings)[:, findings.index(finding)]
    out = df.assign(prob=df[f"prob_{finding}"].to_numpy(dtype=float))
    out["loss"] = _bce((y == 1).astype(float), out["prob"].to_numpy())
    keep = (y == float(true_present)) & (df[f"pred_{finding}"].to_numpy(dtype=int) == int(decided_present))
    return _ranked(out[keep], ["loss"], [False], ["path", "label", "pred", "prob", "loss"])


def finding_frame(df: pd.DataFrame, findings: list[str], finding: str) -> pd.DataFrame:
    """One finding as a binary single-label predictions table (label absent / present, prob_absent / prob_present);
    rows with an uncertain label for it are left out."""
    y = lab.target_matrix(df["label"].astype(str), findings)[:, findings.index(finding)]
    out = df[y >= 0].drop(columns=["label", "pred"]).copy()
    p = out[f"prob_{finding}"].to_numpy(dtype=float)
    out["label"] = np.where(y[y >= 0] == 1, PRESENT, ABSENT)
    out["pred"] = np.where(out[f"pred_{finding}"].to_numpy(dtype=int) == 1, PRESENT, ABSENT)
    out[f"prob_{ABSENT}"], out[f"prob_{PRESENT}"] = 1 - p, p
    return out


def finding_suspects(oof: pd.DataFrame, findings: list[str], finding: str) -> pd.DataFrame:
    """One finding's out-of-fold labels ranked by how likely each is wrong (confident learning, issues first).

    Columns: rank, path, label (the image's findings), given / suggested (absent or present), p_given, issue.
    """
    oof = oof.reset_index(drop=True)
    side = finding_frame(oof, findings, finding)
    y = (side["label"] == PRESENT).to_numpy(dtype=int)
    probs = side[[f"prob_{ABSENT}", f"prob_{PRESENT}"]].to_numpy(dtype=float)
    out = oof.loc[side.index].copy()
    out["given"] = side["label"]
    out["suggested"] = np.where(probs[:, 1] >= 0.5, PRESENT, ABSENT)
    out["p_given"] = probs[np.arange(len(y)), y] if len(y) else []
    out["issue"] = checks.label_issues(y, probs) if len(np.unique(y)) == 2 else np.zeros(len(y), dtype=bool)
    front = ["path", "label", "given", "suggested", "p_given", "issue"]
    return _ranked(out, ["issue", "p_given"], [False, True], front)


def finding_withheld(
    oof: pd.DataFrame, findings: list[str], finding: str, auc_ci: dict[str, float] | None, of: str
) -> str | None:
    """Why one finding's out-of-fold disagreements are no evidence (the single-label rule on that finding), or None."""
    why = checks.suspects_withheld(finding_frame(oof, findings, finding), [ABSENT, PRESENT], auc_ci, of=of)
    return f"for {finding}, {why}" if why else None


# ---------------------------------------------------------------- ordinal


def ordinal_losses(df: pd.DataFrame, grades: list[str], errors_only: bool = False) -> pd.DataFrame:
    """Labelled ordinal predictions ranked by the cumulative cut-point BCE, highest first.

    Columns: rank, path, label, pred, expected_grade (index), grade_error (|predicted - true| in grades), loss,
    correct, and the table's other columns.
    """
    y, probs = evaluate.labels_and_probs(df, grades)
    above = exceed_probs(probs)  # P(grade > k), k = 0..K-2
    target = (y[:, None] > np.arange(len(grades) - 1)[None, :]).astype(float)
    out = df.copy()
    out["expected_grade"] = expected_grade(probs)
    out["grade_error"] = np.abs(predicted_grade(probs) - y)
    out["loss"] = _bce(target, above).sum(1)
    out["correct"] = out["grade_error"] == 0
    if errors_only:
        out = out[~out["correct"]]
    front = ["path", "label", "pred", "expected_grade", "grade_error", "loss", "correct"]
    return _ranked(out, ["loss"], [False], front)


def grade_suspects(oof: pd.DataFrame, grades: list[str]) -> pd.DataFrame:
    """Out-of-fold grades ranked by |expected grade - given grade|, farthest first; `issue` from SUSPECT_GRADES.

    Columns: rank, path, label, suggested (the grade nearest the expected one), expected_grade, distance, issue.
    """
    df = oof[oof["label"].astype(str).isin(grades)]
    y, probs = evaluate.labels_and_probs(df, grades)
    out = df.copy()
    out["expected_grade"] = expected_grade(probs)
    out["distance"] = np.abs(out["expected_grade"].to_numpy(dtype=float) - y)
    nearest = np.clip(np.rint(out["expected_grade"].to_numpy(dtype=float)), 0, len(grades) - 1).astype(int)
    out["suggested"] = np.asarray(grades)[nearest]
    out["issue"] = out["distance"] >= SUSPECT_GRADES
    front = ["path", "label", "suggested", "expected_grade", "distance", "issue"]
    return _ranked(out, ["distance"], [False], front)


# ---------------------------------------------------------------- by task


def decided(set_ev: dict[str, Any], df: pd.DataFrame) -> pd.DataFrame:
    """A set's predictions as its evaluation saw them: multi-label decisions made again at the thresholds it used."""
    if set_ev["task"] != "multilabel":
        return df
    return multilabel.with_thresholds(df, list(set_ev["classes"]), set_ev["thresholds"])


def top_losses(df: pd.DataFrame, classes: list[str], task: str, errors_only: bool = False) -> pd.DataFrame:
    """A multi-label or ordinal predictions table's labelled rows ranked by the task's loss, highest first."""
    rows = evaluate.labelled(df)
    if task == "multilabel":
        return multilabel_losses(rows, classes, errors_only)
    return ordinal_losses(rows[rows["label"].astype(str).isin(classes)], classes, errors_only)


def loss_table(set_ev: dict[str, Any], df: pd.DataFrame, k: int = TOP_LOSSES_SHOWN) -> pd.DataFrame:
    """The k top losses of one evaluated set as a report shows them: file names (never folders), labels, the loss."""
    task = set_ev["task"]
    rows = top_losses(decided(set_ev, df), list(set_ev["classes"]), task).head(k)
    extra = ["wrong"] if task == "multilabel" else ["expected_grade", "grade_error"]
    out = rows[["rank", "path", "label", "pred", *extra, "loss"]].copy()
    out["path"] = [str(p).replace("\\", "/").rsplit("/", 1)[-1] for p in out["path"]]
    if task == "multilabel":
        out["label"], out["pred"] = out["label"].map(shown_findings), out["pred"].map(shown_findings)
    return out.rename(columns={"path": "file", "label": "true", "pred": "predicted"}).round(3)
