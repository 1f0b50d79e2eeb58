"""Corrections by task type: what a user may do to an item's label (exclude it; single-label "label as C", ordinal
"grade as K", multi-label "add F" / "remove F" / "no finding"), the new label an action gives, and the label
column(s) of a corrected table in its source's own format (one class per row; a delimited findings column with the
source's delimiter and "no finding" value; or one 1 / 0 / -1 column per finding), so a corrected multi-label table
is read as multi-label again. core.evaluation.checks.write_corrections writes the table.

An action is the plain sentence shown to the user: "exclude", "label as <class>", "grade as <grade>",
"add finding <finding>", "remove finding <finding>" or "no finding".
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.base.config import SourceConfig
from core.data import labels as lab

EXCLUDED = "(excluded)"  # the new label of an item left out of the corrected table
EXCLUDE, NO_FINDING = "exclude", "no finding"
LABEL_AS, GRADE_AS, ADD, REMOVE = "label as ", "grade as ", "add finding ", "remove finding "
LABEL_COL = "label"  # the corrected table's label column (single-label, ordinal, delimited findings)


def actions(task: str, classes: list[str]) -> list[str]:
    """Every action on an item of this task: exclude, then relabel (a class, a grade; add / remove a finding)."""
    if task == "multilabel":
        return [EXCLUDE, *[ADD + f for f in classes], *[REMOVE + f for f in classes], NO_FINDING]
    return [EXCLUDE, *[(GRADE_AS if task == "ordinal" else LABEL_AS) + c for c in classes]]


def apply(action: str, label: str) -> str:
    """The label an item gets from an action (EXCLUDED for exclude); a multi-label action changes the given set of
    findings (a finding added or removed is no longer uncertain)."""
    if action == EXCLUDE:
        return EXCLUDED
    if action == NO_FINDING:
        return lab.EMPTY
    for prefix in (LABEL_AS, GRADE_AS):
        if action.startswith(prefix):
            return action.removeprefix(prefix)
    if not action.startswith((ADD, REMOVE)):
        raise ValueError(f"unknown correction {action!r}")
    adding = action.startswith(ADD)
    name = action[len(ADD if adding else REMOVE) :]
    sure, unsure = lab.parse("" if label == EXCLUDED else label)
    sure = [f for f in sure if f != name] + ([name] if adding else [])
    return lab.canonical(sure, [f for f in unsure if f != name])


def label_columns(labels: pd.Series, source: SourceConfig | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(the label column(s) of a corrected table, the SourceConfig fields that read them back): as given for one
    class per row; a multi-label source's findings in its own format."""
    if source is None or not source.multilabel():
        return pd.DataFrame({LABEL_COL: labels.to_numpy()}), {"label_col": LABEL_COL}
    if source.finding_cols:
        taken = set(source.finding_cols) & {"path", "old_label", "why", "group", "split"}
        if taken:
            raise ValueError(
                f"a finding column is named {sorted(taken)[0]!r}: rename it to write corrections"
            )
        targets = lab.target_matrix(labels.astype(str), source.finding_cols).astype(int)
        cols = pd.DataFrame(targets, columns=list(source.finding_cols))
        return cols, {"finding_cols": list(source.finding_cols), "uncertain": source.uncertain}
    none = source.no_finding or lab.EMPTY  # an empty cell would read back as unlabelled
    delim = source.label_delimiter
    cells = [none if x == lab.EMPTY else delim.join(lab.parse(x)[0]) for x in labels.astype(str)]
    fields = {"label_col": LABEL_COL, "label_delimiter": delim, "no_finding": none}
    return pd.DataFrame({LABEL_COL: cells}), fields
