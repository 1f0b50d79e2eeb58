"""Corrections of multi-label and ordinal labels (issue 25): the actions by task type and the corrected labels CSV
written by checks.write_corrections in the source's own label format, read back as the same task (a delimited
findings column, one column per finding, ordered grades), with excluded items left out and the user's files kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.base.config import SourceConfig
from core.data import labels as lab
from core.data.sources import load_source
from core.evaluation import checks, relabel


def _images(root, n: int) -> list[str]:
    """n tiny PNGs under root/img (names p0.png ...)."""
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "img" / f"p{i}.png")
    return [f"img/p{i}.png" for i in range(n)]


def _by_name(items: pd.DataFrame) -> dict[str, str]:
    """{file name: label} of an items table."""
    return {p.rsplit("/", 1)[-1]: str(lbl) for p, lbl in zip(items["path"].astype(str), items["label"])}


def _write(tmp_path, src: SourceConfig, actions: dict[int, str]) -> tuple[SourceConfig, pd.DataFrame]:
    """Apply actions {item number: action} to a source's items, write the corrections, load the corrected source."""
    items = load_source(src).items
    paths = {p.rsplit("/", 1)[-1]: p for p in items["path"].astype(str)}
    labels = _by_name(items)
    changes = [
        checks.Correction(paths[f"p{i}.png"], relabel.apply(a, labels[f"p{i}.png"]), "checked")
        for i, a in actions.items()
    ]
    before = src.csv_path and open(src.csv_path).read()
    folder, fields = checks.write_corrections(items, changes, "fixed", base=tmp_path / "corr", source=src)
    assert open(src.csv_path).read() == before  # the user's table is only read
    assert folder.name == "fixed" and (folder / checks.CORRECTION_LOG).exists()
    new = SourceConfig(**fields)
    return new, load_source(new).items


def test_actions_by_task_type():
    assert relabel.actions("ordinal", ["KL0", "KL1"]) == ["exclude", "grade as KL0", "grade as KL1"]
    assert relabel.actions("single", ["a", "b"])[1:] == ["label as a", "label as b"]
    ml = relabel.actions("multilabel", ["x", "y"])
    assert ml == [
        "exclude",
        "add finding x",
        "add finding y",
        "remove finding x",
        "remove finding y",
        "no finding",
    ]
    assert relabel.apply("add finding y", "x") == "x|y"
    assert relabel.apply("remove finding x", "x|y") == "y"
    assert relabel.apply("remove finding x", "x") == lab.EMPTY
    assert relabel.apply("add finding x", "?x|y") == "x|y"  # no longer uncertain
    assert relabel.apply("add finding x", lab.EMPTY) == "x"
    assert relabel.apply("no finding", "x|y") == lab.EMPTY
    assert relabel.apply("grade as KL3", "KL1") == "KL3" and relabel.apply("exclude", "x") == checks.EXCLUDED
    with pytest.raises(ValueError, match="unknown correction"):
        relabel.apply("paint it", "x")


def test_a_delimited_multilabel_table_stays_delimited(tmp_path):
    names = _images(tmp_path, 5)
    cells = ["Effusion;Nodule", "No Finding", "Nodule", "Effusion", "Effusion"]
    pd.DataFrame({"path": names, "Finding Labels": cells, "pid": list("aabbc")}).to_csv(
        tmp_path / "t.csv", index=False
    )
    src = SourceConfig(
        kind="csv",
        csv_path=str(tmp_path / "t.csv"),
        label_col="Finding Labels",
        label_delimiter=";",
        group_col="pid",
    )
    acts = {0: "remove finding Effusion", 1: "add finding Nodule", 2: "no finding", 4: "exclude"}
    new, items = _write(tmp_path, src, acts)
    assert new.multilabel() and new.label_delimiter == ";" and new.no_finding == "No Finding"
    assert _by_name(items) == {
        "p0.png": "Nodule",
        "p1.png": "Nodule",
        "p2.png": lab.EMPTY,
        "p3.png": "Effusion",
    }
    table = pd.read_csv(new.csv_path, keep_default_na=False)
    assert table["label"].tolist() == ["Nodule", "Nodule", "No Finding", "Effusion"]
    assert new.group_col == "group" and table["group"].nunique() == 2  # pseudonymised patients kept
    log = pd.read_csv(tmp_path / "corr/fixed" / checks.CORRECTION_LOG, keep_default_na=False)
    assert log[["old_label", "new_label"]].values.tolist()[0] == ["Effusion|Nodule", "Nodule"]
    assert log["new_label"].tolist()[-1] == checks.EXCLUDED and len(log) == 4


def test_a_table_of_finding_columns_keeps_its_columns_and_uncertain_cells(tmp_path):
    names = _images(tmp_path, 4)
    table = pd.DataFrame({"path": names, "x": [1, 0, -1, 1], "y": [0, 0, 1, 1]})
    table.to_csv(tmp_path / "t.csv", index=False)
    src = SourceConfig(
        kind="csv", csv_path=str(tmp_path / "t.csv"), finding_cols=["x", "y"], uncertain="ignore"
    )
    new, items = _write(tmp_path, src, {0: "add finding y", 1: "add finding x", 3: "remove finding y"})
    assert new.finding_cols == ["x", "y"] and new.uncertain == "ignore" and not new.label_delimiter
    assert _by_name(items) == {"p0.png": "x|y", "p1.png": "x", "p2.png": "y|?x", "p3.png": "x"}
    written = pd.read_csv(new.csv_path)
    assert written[["x", "y"]].values.tolist() == [[1, 1], [1, 0], [-1, 1], [1, 0]]


def test_ordinal_grades_keep_their_names_and_order(tmp_path):
    names = _images(tmp_path, 5)
    grades = ["KL0", "KL1", "KL2", "KL3", "KL4"]
    pd.DataFrame({"path": names, "grade": grades}).to_csv(tmp_path / "t.csv", index=False)
    src = SourceConfig(kind="csv", csv_path=str(tmp_path / "t.csv"), label_col="grade")
    new, items = _write(tmp_path, src, {1: "grade as KL3", 4: "exclude"})
    assert not new.multilabel() and new.label_col == "label"
    assert _by_name(items) == {"p0.png": "KL0", "p1.png": "KL3", "p2.png": "KL2", "p3.png": "KL3"}
    assert lab.infer_order(items["label"].unique()) == [
        "KL0",
        "KL2",
        "KL3",
    ]  # numbered grades: order from names


def test_a_finding_column_named_like_a_correction_column_is_refused(tmp_path):
    names = _images(tmp_path, 2)
    pd.DataFrame({"path": names, "why": [1, 0], "y": [0, 1]}).to_csv(tmp_path / "t.csv", index=False)
    src = SourceConfig(kind="csv", csv_path=str(tmp_path / "t.csv"), finding_cols=["why", "y"])
    with pytest.raises(ValueError, match="a finding column is named 'why'"):
        _write(tmp_path, src, {0: "exclude"})
