"""What a label is, per task type: multi-label sets of findings (parsed from a delimited column or one column per
finding), ordinal grades (their order, inferred for integer-like names), a task type suggested from a table, and
folds stratified over the findings within the patient constraint (iterative stratification).

In an items table a multi-label row's `label` is its findings joined by `SEP` in sorted order; an uncertain
finding (a -1 under the "ignore" policy) carries the `UNCERTAIN` prefix and is left out of the loss and the
metrics; an image with no finding is `EMPTY`. Ordinal and single-label rows hold one class name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from core.data.items import Dataset, SourceError

SEP = "|"  # findings in an items table's label
EMPTY = "(no finding)"  # the label of an image with no finding
UNCERTAIN = "?"  # prefix of a finding whose label is uncertain (left out of the loss)
LABEL = "findings (parsed)"  # the column a multi-label table's canonical labels are written to
SUGGEST_DELIMITERS = ("|", ";")  # label-column delimiters a table is searched for
POSITIVE, NEGATIVE, UNKNOWN = 1.0, 0.0, -1.0  # target values: present, absent, uncertain (masked)
_GRADE = re.compile(r"^(\D*?)\s*(\d+)\s*(\D*)$")  # "KL2" -> ("KL", "2", ""); "grade 3" -> ("grade", "3", "")


# ---------------------------------------------------------------- multi-label: parsing a table


def canonical(findings: Iterable[str], uncertain: Iterable[str] = ()) -> str:
    """The items-table label of a set of findings (sorted; uncertain ones prefixed); EMPTY for none."""
    sure = {f for f in findings if f}
    unsure = {f for f in uncertain if f and f not in sure}
    parts = sorted(sure) + sorted(UNCERTAIN + f for f in unsure)
    return SEP.join(parts) if parts else EMPTY


def split_cell(value: object, delimiter: str, no_finding: str) -> str:
    """A delimited label cell ("Effusion|Infiltration", "No Finding") as a canonical label; "" stays unlabelled."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    if not text:
        return ""
    parts = [p.strip() for p in text.split(delimiter or SEP)]
    found = [p for p in parts if p and p != no_finding]
    return canonical(found)


def _finding_value(value: object, policy: str) -> float | None:
    """One cell of a finding column: 1 present, 0 / blank absent, -1 uncertain by the policy (None = unknown)."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
    if text in ("", "0", "0.0"):
        return NEGATIVE
    if text in ("1", "1.0"):
        return POSITIVE
    if text in ("-1", "-1.0"):
        return {"positive": POSITIVE, "negative": NEGATIVE}.get(policy)
    raise ValueError(text)


def from_finding_columns(df: pd.DataFrame, cols: Sequence[str], policy: str) -> pd.Series:
    """Canonical labels from one 1 / 0 / blank / -1 column per finding (-1 by `policy`: ignore, positive, negative)."""
    missing = [c for c in cols if c not in df]
    if missing:
        raise SourceError(f"the table has no finding column(s) {', '.join(missing)}; it has {', '.join(df)}")
    out = []
    for i, row in enumerate(df[list(cols)].itertuples(index=False)):
        sure: list[str] = []
        unsure: list[str] = []
        for col, value in zip(cols, row):
            try:
                v = _finding_value(value, policy)
            except ValueError:
                raise SourceError(
                    f"row {i + 1}: column {col!r} holds {value!r}; a finding column holds 1, 0, blank or -1"
                ) from None
            (sure if v == POSITIVE else unsure if v is None else []).append(col)
        out.append(canonical(sure, unsure))
    return pd.Series(out, index=df.index, dtype=object)


def multilabel_table(
    df: pd.DataFrame,
    label_col: str,
    delimiter: str,
    finding_cols: Sequence[str],
    policy: str,
    no_finding: str,
) -> pd.DataFrame:
    """The table with a `LABEL` column of canonical labels (from finding columns, else the delimited label column)."""
    out = df.copy()
    if finding_cols:
        out[LABEL] = from_finding_columns(df, finding_cols, policy)
    else:
        if label_col not in df:
            raise SourceError(f"the table has no label column {label_col!r}; it has {', '.join(df)}")
        out[LABEL] = [split_cell(v, delimiter, no_finding) for v in df[label_col]]
    return out


# ---------------------------------------------------------------- multi-label: labels as targets


def parse(label: str) -> tuple[list[str], list[str]]:
    """(present findings, uncertain findings) of a canonical label."""
    if not label or label == EMPTY:
        return [], []
    parts = [p for p in str(label).split(SEP) if p]
    return [p for p in parts if not p.startswith(UNCERTAIN)], [
        p[1:] for p in parts if p.startswith(UNCERTAIN)
    ]


def finding_names(labels: Iterable[str]) -> list[str]:
    """Every finding named by a set of canonical labels (present or uncertain), sorted."""
    names: set[str] = set()
    for label in set(map(str, labels)):
        sure, unsure = parse(label)
        names.update(sure, unsure)
    return sorted(names)


def encode(label: str, findings: Sequence[str]) -> np.ndarray:
    """A canonical label as a target vector over `findings`: 1 present, 0 absent, -1 uncertain."""
    sure, unsure = parse(label)
    vec = np.zeros(len(findings), dtype=np.float32)
    index = {f: i for i, f in enumerate(findings)}
    for f in sure:
        if f in index:
            vec[index[f]] = POSITIVE
    for f in unsure:
        if f in index:
            vec[index[f]] = UNKNOWN
    return vec


def target_matrix(labels: Iterable[str], findings: Sequence[str]) -> np.ndarray:
    """Items x findings targets (1 / 0 / -1) of canonical labels."""
    rows = [encode(str(x), findings) for x in labels]
    return np.stack(rows) if rows else np.zeros((0, len(findings)), dtype=np.float32)


def finding_counts(labels: Iterable[str]) -> pd.DataFrame:
    """One row per finding: images with it, uncertain ones, and the share of images with it."""
    labels = [str(x) for x in labels]
    names = finding_names(labels)
    y = target_matrix(labels, names)
    return pd.DataFrame(
        {
            "finding": names,
            "images": (y == POSITIVE).sum(0).astype(int),
            "uncertain": (y == UNKNOWN).sum(0).astype(int),
            "share": (y == POSITIVE).mean(0) if len(labels) else np.zeros(len(names)),
        }
    )


def co_occurrence(labels: Iterable[str]) -> pd.DataFrame:
    """Findings x findings: images holding both (the diagonal: images holding the finding)."""
    labels = [str(x) for x in labels]
    names = finding_names(labels)
    pos = (target_matrix(labels, names) == POSITIVE).astype(int)
    return pd.DataFrame(pos.T @ pos, index=names, columns=names)


# ---------------------------------------------------------------- ordinal grades


def infer_order(classes: Iterable[str]) -> list[str] | None:
    """The grades in order when every name is one integer with the same text around it (0..4, KL0..KL4); else None."""
    names = sorted({str(c) for c in classes})
    parts = [_GRADE.match(n.strip()) for n in names]
    if len(names) < 2 or not all(parts):
        return None
    frames = {(m.group(1).strip().lower(), m.group(3).strip().lower()) for m in parts if m}
    if len(frames) != 1:
        return None
    return [n for _, n in sorted((int(m.group(2)), n) for m, n in zip(parts, names) if m)]


def grade_order(labels: Iterable[str], order: Sequence[str]) -> list[str]:
    """The grades of an ordinal task: the given order (which must name every label), else the inferred one."""
    present = sorted({str(x) for x in labels})
    if order:
        unknown = sorted(set(present) - set(order))
        if unknown:
            raise SourceError(f"labels {unknown} are not in the grade order ({', '.join(order)})")
        return list(order)
    inferred = infer_order(present)
    if inferred is None:
        raise SourceError(
            f"the order of the grades {present} cannot be inferred (they are not numbered like 0..4 or KL0..KL4); "
            "give it with --grade-order (lowest first)"
        )
    return inferred


def task_classes(labels: Iterable[str], task: str, order: Sequence[str] = ()) -> list[str]:
    """A run's classes by task type: the findings (multilabel), the grades in order (ordinal), else sorted labels."""
    labels = [str(x) for x in labels]
    if task == "multilabel":
        return finding_names(labels)
    if task == "ordinal":
        return grade_order(labels, order)
    return sorted(set(labels))


def class_counts(labels: Iterable[str], task: str, order: Sequence[str] = ()) -> dict[str, int]:
    """Images per class as training checks them: per finding and EMPTY (multilabel), per grade (ordinal; the order
    must be known), else per label."""
    series = pd.Series([str(x) for x in labels], dtype=object)
    if task == "multilabel":
        table = finding_counts(series)
        empty = int((series == EMPTY).sum())
        return {
            **dict(zip(table["finding"], table["images"].astype(int))),
            **({EMPTY: empty} if empty else {}),
        }
    counts = series.value_counts()
    classes = task_classes(series, task, order)
    return {c: int(counts.get(c, 0)) for c in classes}


def trainable_reasons(ds: Dataset, task: str, order: Sequence[str] = ()) -> list[str]:
    """Dataset.check_trainable by task type: findings (and images without one) or grades counted as classes."""
    if task == "single" or not len(ds.items):
        return ds.check_trainable()
    try:
        counts = class_counts(ds.items["label"], task, order)
    except SourceError as err:
        return [str(err)]
    if (
        task == "multilabel"
    ):  # a rare finding does not stop the others: it trains, its metrics say n/a where absent
        counts = {k: v for k, v in counts.items() if v >= 2} or counts
    return ds.check_trainable(counts)


# ---------------------------------------------------------------- the task a table suggests


def finding_columns(df: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    """Columns that hold only 1 / 0 / blank / -1 (with at least one 1): candidate per-finding columns."""
    out = []
    for col in df.columns:
        if col in set(exclude):
            continue
        values = {str(v).strip() for v in df[col].dropna().unique()} - {""}
        if values and values <= {"0", "1", "-1", "0.0", "1.0", "-1.0"} and values & {"1", "1.0"}:
            out.append(str(col))
    return out


def suggest_task(
    df: pd.DataFrame, label_col: str = "label", exclude: Iterable[str] = ()
) -> dict[str, object]:
    """The task type a table suggests: {"task", "delimiter", "finding_cols", "order"} (single when nothing fits)."""
    out: dict[str, object] = {"task": "single", "delimiter": "", "finding_cols": [], "order": []}
    if label_col in df:
        cells = df[label_col].dropna().astype(str)
        for d in SUGGEST_DELIMITERS:
            if cells.str.contains(d, regex=False).any():
                return {**out, "task": "multilabel", "delimiter": d}
        order = infer_order(cells.unique())
        if order and len(order) >= 3:
            return {**out, "task": "ordinal", "order": order}
    cols = finding_columns(df, [label_col, *exclude])
    if len(cols) >= 2:
        return {**out, "task": "multilabel", "finding_cols": cols}
    return out


# ---------------------------------------------------------------- iterative stratification


def _fold_of_groups(y: np.ndarray, sizes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sechidis et al. (2011) iterative stratification of groups (rows of y: positives per finding) into k folds."""
    fold = np.full(len(y), -1)
    want = np.tile(y.sum(0) / k, (k, 1)).astype(float)  # positives per fold and finding still wanted
    room = np.full(k, sizes.sum() / k, dtype=float)  # items per fold still wanted
    left = np.ones(len(y), dtype=bool)
    while left.any():
        remaining = (y[left] > 0).sum(0)
        if not (remaining > 0).any():
            break
        f = int(np.argmin(np.where(remaining > 0, remaining, np.inf)))
        for g in rng.permutation(np.flatnonzero(left & (y[:, f] > 0))):
            best = np.flatnonzero(want[:, f] == want[:, f].max())
            best = best[room[best] == room[best].max()]
            j = int(rng.choice(best))
            fold[g], left[g] = j, False
            want[j] -= y[g]
            room[j] -= sizes[g]
    for g in rng.permutation(np.flatnonzero(left)):  # groups without any finding: by size still wanted
        j = int(np.argmax(room))
        fold[g] = j
        room[j] -= sizes[g]
    return fold


def iterative_folds(labels: Sequence[str], groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold 0..k-1 per item, stratified over the findings, every group (patient) in one fold."""
    labels = [str(x) for x in labels]
    names = finding_names(labels)
    y = (target_matrix(labels, names) == POSITIVE).astype(float)
    codes, uniq = pd.factorize(pd.Series(np.asarray(groups)))
    per_group = np.zeros((len(uniq), len(names)))
    np.add.at(per_group, codes, y)
    sizes = np.bincount(codes, minlength=len(uniq)).astype(float)
    fold_of_group = _fold_of_groups(per_group, sizes, k, np.random.default_rng(seed))
    return fold_of_group[codes]
